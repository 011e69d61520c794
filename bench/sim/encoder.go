package sim

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Format is a flow export format.
type Format uint8

// Export formats.
const (
	FormatNetFlow9 Format = iota + 1
	FormatIPFIX
	FormatSFlow5
)

// String returns "netflow9", "ipfix" or "sflow5".
func (f Format) String() string {
	switch f {
	case FormatNetFlow9:
		return "netflow9"
	case FormatIPFIX:
		return "ipfix"
	case FormatSFlow5:
		return "sflow5"
	}
	return "unknown"
}

// SFlowHeader is the header_protocol of sFlow sampled packet headers.
type SFlowHeader uint32

// sFlow header protocols (sFlow v5, sampled_header.header_protocol).
const (
	// SFlowHeaderEthernet samples Ethernet frames (header_protocol 1).
	SFlowHeaderEthernet SFlowHeader = 1
	// SFlowHeaderIP samples IP packets without a link header:
	// header_protocol 11 (IPv4) or 12 (IPv6), as pmacct's sfprobe does.
	SFlowHeaderIP SFlowHeader = 11
)

// Encoder turns Records into export datagrams. Implementations are not safe
// for concurrent use: each simulated router has its own.
type Encoder interface {
	// Encode builds one datagram in dst (dst's contents are overwritten;
	// it is grown only if its capacity is below the datagram size limit)
	// from a prefix of recs, exported at event time exportMs (Unix ms). It
	// returns the datagram, how many records of recs it consumed, and how
	// many flow records (sFlow: flow samples) the datagram carries. Records
	// dropped by sampling are consumed without being carried; the datagram
	// is empty when nothing was left to send. Call Encode until every
	// record is consumed and Pending reports false.
	Encode(dst []byte, recs []Record, exportMs int64) (dgram []byte, consumed, flows int)
	// Pending reports whether part of an already consumed record still
	// waits to be encoded (an sFlow record with more samples than fit in
	// one datagram).
	Pending() bool
	// Format returns the export format.
	Format() Format
}

// EncoderConfig configures an encoder: one router's export process.
type EncoderConfig struct {
	// ObservationDomain is the NetFlow v9 source ID, the IPFIX observation
	// domain ID, or the sFlow sub-agent ID.
	ObservationDomain uint32
	// MaxDatagram is the largest datagram (UDP payload) in bytes; 0 means
	// 1400, which fits a 1500-byte MTU with IPv4 or IPv6 and UDP headers.
	MaxDatagram int
	// Sampling is N of random 1:N packet sampling; 0 or 1 means unsampled.
	// NetFlow v9 and IPFIX then announce it with an options template and
	// options data (samplingInterval, samplingAlgorithm = random); sFlow
	// carries it in every flow sample (sampling_rate, sample_pool).
	Sampling uint32
	// Seed seeds the packet sampler.
	Seed uint64
	// BootMs is the event time (Unix ms) the exporter booted: NetFlow v9
	// sysUptime and record times, and sFlow uptime, count from it. Zero
	// means one hour before the first export time seen.
	BootMs int64
	// TemplateRefresh is how many datagrams may pass before templates (and
	// the sampling options data) are sent again; 0 means 64.
	TemplateRefresh int
	// TemplateInterval is how much event time may pass before templates are
	// sent again; 0 means one minute.
	TemplateInterval time.Duration
	// AgentAddr is the sFlow agent address (the router); the zero value
	// means 127.0.0.1.
	AgentAddr netip.Addr
	// SFlowHeader is the sampled header format of sFlow flow samples; zero
	// means SFlowHeaderEthernet.
	SFlowHeader SFlowHeader
	// SFlowSourceIndex is the ifIndex of the sFlow data source (the
	// sampler's interface); 0 means 100, the uplink.
	SFlowSourceIndex uint32
	// Trace, when not nil, is called with every record as it is exported,
	// after sampling (sFlow: once per record, with Packets set to the number
	// of samples it produced). Tests use it to know exactly what was sent.
	Trace func(*Record)
}

// Sentinel errors of the encoders' configuration.
var (
	// ErrDatagramSize reports a MaxDatagram too small for one record.
	ErrDatagramSize = errors.New("max datagram size too small")
)

const (
	defaultMaxDatagram      = 1400
	defaultTemplateRefresh  = 64
	defaultTemplateInterval = time.Minute
	// minDatagram must hold the header, all templates, options data and
	// one IPv6 record of every format.
	minDatagram = 512
	maxDatagram = 65507
)

func (c *EncoderConfig) withDefaults() (EncoderConfig, error) {
	d := *c
	if d.MaxDatagram == 0 {
		d.MaxDatagram = defaultMaxDatagram
	}
	if d.MaxDatagram < minDatagram || d.MaxDatagram > maxDatagram {
		return d, fmt.Errorf("%w: %d bytes (allowed %d to %d)", ErrDatagramSize, d.MaxDatagram, minDatagram, maxDatagram)
	}
	if d.TemplateRefresh <= 0 {
		d.TemplateRefresh = defaultTemplateRefresh
	}
	if d.TemplateInterval <= 0 {
		d.TemplateInterval = defaultTemplateInterval
	}
	if !d.AgentAddr.IsValid() {
		d.AgentAddr = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	if d.SFlowHeader == 0 {
		d.SFlowHeader = SFlowHeaderEthernet
	}
	if d.SFlowHeader != SFlowHeaderEthernet && d.SFlowHeader != SFlowHeaderIP {
		return d, fmt.Errorf("sflow header protocol %d: want 1 (ethernet) or 11 (ip)", d.SFlowHeader)
	}
	if d.SFlowSourceIndex == 0 {
		d.SFlowSourceIndex = 100
	}
	return d, nil
}

// NewEncoder returns the encoder of format f.
func NewEncoder(f Format, cfg EncoderConfig) (Encoder, error) {
	switch f {
	case FormatNetFlow9:
		return NewNetFlow9Encoder(cfg)
	case FormatIPFIX:
		return NewIPFIXEncoder(cfg)
	case FormatSFlow5:
		return NewSFlowEncoder(cfg)
	}
	return nil, fmt.Errorf("unknown export format %d", f)
}

// templateClock decides when templates are due.
type templateClock struct {
	every     int
	interval  int64
	sinceLast int
	lastMs    int64
	sent      bool
}

func (t *templateClock) due(exportMs int64) bool {
	return !t.sent || t.sinceLast >= t.every || exportMs-t.lastMs >= t.interval
}

func (t *templateClock) mark(exportMs int64) {
	t.sent, t.sinceLast, t.lastMs = true, 0, exportMs
}

// grow returns dst resliced to n bytes, reallocating only when too small.
func grow(dst []byte, n int) []byte {
	if cap(dst) < n {
		return make([]byte, n)
	}
	return dst[:n]
}

func pad4(n int) int { return (n + 3) &^ 3 }
