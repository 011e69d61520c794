package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ccflow/ccflow/bench/sim"
)

// simulateOptions are the flags of `ccflow simulate`.
type simulateOptions struct {
	netflowAddr, ipfixAddr, sflowAddr string
	truth, benign, dataset, pcap      string
	summary                           string
	truthSubscribers                  bool
	start                             string
	duration, wallDuration, progress  time.Duration
	speed, datagramRate, flowRate     float64
	sampling                          uint32
	sflowHeader                       string
	maxDatagram, templateRefresh      int
	beaconPeriod                      string
	prefixes, botnetServices          []string
	ipv6ShareSet                      bool
	model                             sim.Config
}

func newSimulateCmd() *cobra.Command {
	o := &simulateOptions{model: sim.DefaultConfig()}
	m := &o.model
	cmd := &cobra.Command{
		Use:   "simulate --netflow-addr|--ipfix-addr|--sflow-addr HOST:PORT [--truth FILE] [flags]",
		Short: "Simulate an ISP with botnets and export its flows as NetFlow v9, IPFIX or sFlow",
		Long: `simulate runs a synthetic ISP: subscribers (private and documentation addresses only)
browsing popular services, NTP clients and update checkers polling a few servers, and
botnets whose infected subscribers beacon to C&C servers with jitter and missed beats.
Its routers export the flows as NetFlow v9, IPFIX and/or sFlow v5 to the given
addresses (each router serves an equal share of the subscribers).

Time is event time: --speed 120 simulates two hours per wall minute, and flow
timestamps in the datagrams follow event time (sFlow has none: collectors stamp
samples on arrival). --datagram-rate or --flow-rate pace the output instead,
letting event time run as fast as needed. --duration counts event time,
--wall-duration wall time; the run ends at the first reached, or on Ctrl-C.

--truth writes the botnets as the CSV that "ccflow eval" reads
(dataset,infected_src,c2_dst,dport,proto,note); --benign writes the NTP, update
and DNS servers, which must never become candidates. Both are written before the
first datagram. The same --seed and --start give the same traffic and truth.
See docs/simulator.md.`,
		Example: `  # Four hours of event time in two minutes to a local collector, with truth:
  ccflow simulate --netflow-addr 127.0.0.1:2055 --truth truth.csv --benign benign.csv \
      --speed 120 --duration 4h --start=-4h

  # A fixed load for a benchmark: 20k IPFIX datagrams/s for 30 s of wall time:
  ccflow simulate --ipfix-addr 127.0.0.1:4739 --datagram-rate 20000 --wall-duration 30s \
      --subscribers 20000

  # sFlow with 1:512 packet sampling and bare IPv4 headers, to two collectors:
  ccflow simulate --sflow-addr 127.0.0.1:6343 --netflow-addr 127.0.0.1:2055 \
      --sampling 512 --sflow-header ip`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.ipv6ShareSet = cmd.Flags().Changed("ipv6-share")
			return runSimulate(cmd.Context(), o, cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.netflowAddr, "netflow-addr", "", "send NetFlow v9 to `HOST:PORT`")
	f.StringVar(&o.ipfixAddr, "ipfix-addr", "", "send IPFIX to `HOST:PORT`")
	f.StringVar(&o.sflowAddr, "sflow-addr", "", "send sFlow v5 to `HOST:PORT`")
	f.StringVar(&o.truth, "truth", "", "write the botnet truth CSV (for ccflow eval) to `FILE`")
	f.BoolVar(&o.truthSubscribers, "truth-subscribers", true, "fill the truth's infected_src column with the infected subscribers' addresses (false leaves it empty)")
	f.StringVar(&o.benign, "benign", "", "write the benign periodic and high-fan-in services (NTP, update, DNS) as CSV to `FILE`")
	f.StringVar(&o.dataset, "dataset", "ccflow-sim", "dataset `NAME` in the truth and benign files")
	f.StringVar(&o.pcap, "pcap", "", "also record every datagram sent into the pcap `FILE` (disables batched sends)")
	f.StringVar(&o.summary, "summary", "", "write the final counters as JSON to `FILE` when the run ends (for benchmark scripts)")

	f.Uint64Var(&m.Seed, "seed", m.Seed, "random seed: the same seed and --start give the same traffic and truth")
	f.StringVar(&o.start, "start", "now", "event time of the start: RFC 3339, or a duration relative to now such as -4h")
	f.DurationVar(&o.duration, "duration", 0, "stop after this much event time (0: no limit)")
	f.DurationVar(&o.wallDuration, "wall-duration", 0, "stop after this much wall time (0: no limit)")
	f.Float64Var(&o.speed, "speed", 1, "event seconds per wall second (0: as fast as possible)")
	f.Float64Var(&o.datagramRate, "datagram-rate", 0, "pace at this many datagrams per wall second, all targets together (overrides --speed)")
	f.Float64Var(&o.flowRate, "flow-rate", 0, "pace at this many flow records (sFlow: samples) per wall second (overrides --speed)")
	f.Uint32Var(&o.sampling, "sampling", 1, "random 1:`N` packet sampling at the routers, announced in the export (1: unsampled)")
	f.StringVar(&o.sflowHeader, "sflow-header", "ethernet", "sFlow sampled header: ethernet (header_protocol 1) or ip (11 IPv4 / 12 IPv6)")
	f.IntVar(&o.maxDatagram, "max-datagram", 1400, "largest datagram (UDP payload) in `BYTES`")
	f.IntVar(&o.templateRefresh, "template-refresh", 64, "resend NetFlow v9 / IPFIX templates every `N` datagrams (and every event minute)")
	f.DurationVar(&o.progress, "progress", 5*time.Second, "print progress on stderr at this wall interval (0: only the summary)")

	f.IntVar(&m.Subscribers, "subscribers", m.Subscribers, "number of subscribers")
	f.StringSliceVar(&o.prefixes, "subscriber-prefixes", simPrefixStrings(m.SubscriberPrefixes), "subscriber `CIDRs` (private, shared or documentation space): the first IPv4 one numbers every subscriber, the first IPv6 one the dual-stack ones")
	f.Float64Var(&m.IPv6Share, "ipv6-share", m.IPv6Share, "fraction of subscribers with IPv6")
	f.DurationVar(&m.SessionInterval, "session-interval", m.SessionInterval, "mean time between a subscriber's browsing sessions (Pareto gaps)")
	f.IntVar(&m.PopularServices, "popular-services", m.PopularServices, "number of popular web/CDN/QUIC endpoints (Zipf popularity)")
	f.Float64Var(&m.NTPShare, "ntp-share", m.NTPShare, "fraction of subscribers running an NTP client (poll 64-1024 s)")
	f.Float64Var(&m.UpdateShare, "update-share", m.UpdateShare, "fraction of subscribers running an update checker")
	f.DurationVar(&m.UpdateInterval, "update-interval", m.UpdateInterval, "update checkers' period")
	f.IntVar(&m.Botnets, "botnets", m.Botnets, "number of botnets")
	f.IntVar(&m.InfectedPerBotnet, "infected-per-botnet", m.InfectedPerBotnet, "infected subscribers per botnet")
	f.StringVar(&o.beaconPeriod, "beacon-period", "1m-10m", "beacon period, or `MIN-MAX` from which each botnet draws its own")
	f.Float64Var(&m.BeaconJitter, "beacon-jitter", m.BeaconJitter, "beacon jitter as a fraction of the period (uniform +-)")
	f.Float64Var(&m.MissedBeats, "missed-beats", m.MissedBeats, "probability that a beacon is skipped")
	f.StringSliceVar(&o.botnetServices, "botnet-services", simServiceStrings(m.BotnetServices), "C&C `PROTO/PORT` list the botnets take in turn")
	return cmd
}

func simPrefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func simServiceStrings(ss []sim.Service) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.String()
	}
	return out
}

// parseSimStart reads --start: "now", RFC 3339, or a duration relative to now.
func parseSimStart(s string, now time.Time) (time.Time, error) {
	switch {
	case s == "" || s == "now":
		return now, nil
	case strings.HasPrefix(s, "-") || strings.HasPrefix(s, "+"):
		d, err := time.ParseDuration(s)
		if err != nil {
			return time.Time{}, fmt.Errorf("--start %q: %w", s, err)
		}
		return now.Add(d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--start %q: want now, RFC 3339 or a relative duration like -4h", s)
	}
	return t, nil
}

// simulateModel completes the model configuration from the flags.
func (o *simulateOptions) simulateModel(now time.Time) (sim.Config, error) {
	m := o.model
	var errs []error
	var err error
	if m.Start, err = parseSimStart(o.start, now); err != nil {
		errs = append(errs, err)
	}
	m.SubscriberPrefixes = nil
	for _, s := range o.prefixes {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			errs = append(errs, fmt.Errorf("--subscriber-prefixes: %w", err))
			continue
		}
		m.SubscriberPrefixes = append(m.SubscriberPrefixes, p)
	}
	if m.IPv6Share > 0 && !o.ipv6ShareSet && !simHasIPv6(m.SubscriberPrefixes) {
		m.IPv6Share = 0 // IPv4-only prefixes given: no dual stack
	}
	lo, hi, ok := strings.Cut(o.beaconPeriod, "-")
	if !ok {
		hi = lo
	}
	if m.BeaconPeriodMin, err = time.ParseDuration(lo); err != nil {
		errs = append(errs, fmt.Errorf("--beacon-period: %w", err))
	}
	if m.BeaconPeriodMax, err = time.ParseDuration(hi); err != nil {
		errs = append(errs, fmt.Errorf("--beacon-period: %w", err))
	}
	m.BotnetServices = nil
	for _, s := range o.botnetServices {
		svc, err := sim.ParseService(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("--botnet-services: %w", err))
			continue
		}
		m.BotnetServices = append(m.BotnetServices, svc)
	}
	if len(errs) == 0 {
		if err := m.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return m, errors.Join(errs...)
}

func simHasIPv6(ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Addr().Is6() {
			return true
		}
	}
	return false
}

// runSimulate runs `ccflow simulate`: it writes the truth files, then
// simulates and sends until a duration ends or ctx is canceled (Ctrl-C),
// printing progress and a summary on stderr.
func runSimulate(ctx context.Context, o *simulateOptions, stderr io.Writer) error {
	model, err := o.simulateModel(time.Now().Truncate(time.Second))
	if err != nil {
		return fmt.Errorf("simulate: %w", err)
	}
	pacing := sim.Pacing{Speed: o.speed, DatagramRate: o.datagramRate, FlowRate: o.flowRate, Duration: o.duration, WallDuration: o.wallDuration}
	if err := pacing.Validate(); err != nil {
		return fmt.Errorf("simulate: %w", err)
	}
	var hdr sim.SFlowHeader
	switch o.sflowHeader {
	case "ethernet":
		hdr = sim.SFlowHeaderEthernet
	case "ip":
		hdr = sim.SFlowHeaderIP
	default:
		return fmt.Errorf("simulate: --sflow-header %q: want ethernet or ip", o.sflowHeader)
	}
	targets := []struct {
		flag, addr string
		format     sim.Format
	}{
		{"--netflow-addr", o.netflowAddr, sim.FormatNetFlow9},
		{"--ipfix-addr", o.ipfixAddr, sim.FormatIPFIX},
		{"--sflow-addr", o.sflowAddr, sim.FormatSFlow5},
	}
	s, err := sim.New(model)
	if err != nil {
		return fmt.Errorf("simulate: %w", err)
	}
	if o.truth != "" {
		if err := simWriteFile(o.truth, func(w io.Writer) error { return s.WriteTruth(w, o.dataset, o.truthSubscribers) }); err != nil {
			return fmt.Errorf("simulate: %w", err)
		}
	}
	if o.benign != "" {
		if err := simWriteFile(o.benign, func(w io.Writer) error { return s.WriteBenign(w, o.dataset) }); err != nil {
			return fmt.Errorf("simulate: %w", err)
		}
	}

	var pcap *sim.Pcap
	if o.pcap != "" {
		pf, err := os.Create(o.pcap)
		if err != nil {
			return fmt.Errorf("simulate: %w", err)
		}
		defer pf.Close()
		if pcap, err = sim.NewPcap(pf); err != nil {
			return fmt.Errorf("simulate: %w", err)
		}
		defer func() { _ = pcap.Flush() }()
	}
	var exps []*sim.Exporter
	var names []string
	for _, t := range targets {
		if t.addr == "" {
			continue
		}
		w, err := sim.DialUDP(t.addr)
		if err != nil {
			return fmt.Errorf("simulate: %s: %w", t.flag, err)
		}
		defer w.Close()
		enc, err := sim.NewEncoder(t.format, sim.EncoderConfig{
			ObservationDomain: uint32(len(exps) + 1),
			MaxDatagram:       o.maxDatagram,
			Sampling:          o.sampling,
			Seed:              model.Seed + uint64(len(exps)) + 1,
			TemplateRefresh:   o.templateRefresh,
			AgentAddr:         w.LocalAddr(),
			SFlowHeader:       hdr,
		})
		if err != nil {
			return fmt.Errorf("simulate: %s: %w", t.flag, err)
		}
		var out io.Writer = w
		if pcap != nil {
			remote, err := net.ResolveUDPAddr("udp", t.addr)
			if err != nil {
				return fmt.Errorf("simulate: %s: %w", t.flag, err)
			}
			local := netip.AddrPortFrom(w.LocalAddr(), 0)
			out = io.MultiWriter(w, pcap.Writer(local, netip.AddrPortFrom(remote.AddrPort().Addr().Unmap(), remote.AddrPort().Port())))
		}
		exps = append(exps, &sim.Exporter{Encoder: enc, W: out})
		names = append(names, t.format.String()+" to "+t.addr)
	}
	if len(exps) == 0 {
		return errors.New("simulate: no target: give --netflow-addr, --ipfix-addr and/or --sflow-addr HOST:PORT")
	}

	fmt.Fprintf(stderr, "simulate: %d subscribers, %d botnets x %d infected, sampling 1:%d, %s; %s; start %s\n",
		model.Subscribers, model.Botnets, model.InfectedPerBotnet, max(o.sampling, 1), simPacingString(pacing),
		strings.Join(names, ", "), model.Start.UTC().Format(time.RFC3339))
	wallStart := time.Now()
	done := make(chan struct{})
	stopped := make(chan struct{})
	if o.progress > 0 {
		go func() {
			defer close(stopped)
			t := time.NewTicker(o.progress)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					fmt.Fprintln(stderr, "simulate:", simProgressLine(s.Stats(), model.Start, wallStart, o.duration))
				}
			}
		}()
	} else {
		close(stopped)
	}
	err = s.Run(ctx, pacing, exps...)
	close(done)
	<-stopped
	st := s.Stats()
	wall := time.Since(wallStart)
	fmt.Fprintln(stderr, "simulate: done:", simProgressLine(st, model.Start, wallStart, o.duration))
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("simulate: %w", err)
	}
	if o.summary != "" {
		sum := simSummary{
			Start: model.Start.UTC(), End: st.EventTime.UTC(), EventSeconds: st.EventTime.Sub(model.Start).Seconds(),
			WallSeconds: wall.Seconds(), Generated: st.Generated, Datagrams: st.Datagrams, Flows: st.Flows,
			Bytes: st.Bytes, SendErrors: st.SendErrors, Sampling: max(o.sampling, 1),
		}
		if err := simWriteFile(o.summary, func(w io.Writer) error {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			return enc.Encode(sum)
		}); err != nil {
			return fmt.Errorf("simulate: %w", err)
		}
	}
	return nil
}

// simSummary is the JSON written by --summary.
type simSummary struct {
	Start        time.Time `json:"event_start"`
	End          time.Time `json:"event_end"`
	EventSeconds float64   `json:"event_seconds"`
	WallSeconds  float64   `json:"wall_seconds"`
	Generated    uint64    `json:"records_generated"`
	Datagrams    uint64    `json:"datagrams"`
	Flows        uint64    `json:"flows"`
	Bytes        uint64    `json:"bytes"`
	SendErrors   uint64    `json:"send_errors"`
	Sampling     uint32    `json:"sampling"`
}

func simPacingString(p sim.Pacing) string {
	var s string
	switch {
	case p.DatagramRate > 0:
		s = fmt.Sprintf("%g datagrams/s", p.DatagramRate)
	case p.FlowRate > 0:
		s = fmt.Sprintf("%g flows/s", p.FlowRate)
	case p.Speed > 0:
		s = fmt.Sprintf("speed %gx", p.Speed)
	default:
		s = "unpaced"
	}
	if p.Duration > 0 {
		s += ", " + p.Duration.String() + " of event time"
	}
	if p.WallDuration > 0 {
		s += ", at most " + p.WallDuration.String() + " of wall time"
	}
	return s
}

// simProgressLine formats the counters: event time reached, speed, datagrams,
// flows and rates.
func simProgressLine(st sim.Stats, start, wallStart time.Time, duration time.Duration) string {
	wall := time.Since(wallStart).Seconds()
	ev := st.EventTime.Sub(start)
	if st.EventTime.IsZero() || ev < 0 {
		ev = 0
	}
	of := ""
	if duration > 0 {
		of = " of " + duration.String()
	}
	return fmt.Sprintf("event %s (+%s%s, %.0fx) | %d datagrams (%s/s) | %d flows (%s/s) | %d send errors",
		st.EventTime.UTC().Format(time.RFC3339), ev.Round(time.Second), of, ev.Seconds()/max(wall, 1e-9),
		st.Datagrams, simSI(float64(st.Datagrams)/max(wall, 1e-9)), st.Flows, simSI(float64(st.Flows)/max(wall, 1e-9)), st.SendErrors)
}

// simSI formats v with a k or M suffix.
func simSI(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 2, 64) + "M"
	case v >= 1e3:
		return strconv.FormatFloat(v/1e3, 'f', 1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

// simWriteFile writes path through a temporary file and a rename, so
// that a reader never sees half a file.
func simWriteFile(path string, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(f.Name())
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
