package archive

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/ccflow/ccflow/flow"
)

// Mapping names the columns of a delimited flow file. A column may list
// alternative header names separated by "|" (the first one present wins);
// Bytes, Packets and Label may list several columns joined by "+", whose
// values are summed (Label: joined with a space).
type Mapping struct {
	// Start is the column of the flow's start time (required).
	Start string
	// End is the column of the end time; Duration the column of the
	// duration, in DurationUnit (default seconds). Both are optional.
	End          string
	Duration     string
	DurationUnit time.Duration
	// Src, Dst, SrcPort, DstPort and Proto name the 5-tuple columns; Src
	// and Dst are required. Proto accepts names ("tcp") and numbers.
	Src, Dst, SrcPort, DstPort, Proto string
	// Bytes and Packets are summed over the listed columns.
	Bytes, Packets []string
	// Sampling is the column of the 1:N sampling rate, if any; without it
	// records get SamplingRate 1 (archives are normally unsampled).
	Sampling string
	// Label lists ground-truth label columns, if any.
	Label []string
	// TimeFormat is "" (detect), "unix" (seconds, fractions allowed),
	// "unix_ms", "unix_us", or a Go time layout.
	TimeFormat string
	// Sep is the field separator (default ',').
	Sep rune
}

var binetflowMapping = Mapping{
	Start: "StartTime", Duration: "Dur", Proto: "Proto",
	Src: "SrcAddr", SrcPort: "Sport", Dst: "DstAddr", DstPort: "Dport",
	Bytes: []string{"TotBytes"}, Packets: []string{"TotPkts"}, Label: []string{"Label"},
}

// cicMapping covers the CICFlowMeter column names of CIC-IDS2017's
// original CSVs (leading spaces are trimmed) and of the later CICFlowMeter
// versions used by the DistriNet relabel. Flow Duration is in microseconds.
var cicMapping = Mapping{
	Start: "Timestamp", Duration: "Flow Duration", DurationUnit: time.Microsecond,
	Src: "Src IP|Source IP", SrcPort: "Src Port|Source Port",
	Dst: "Dst IP|Destination IP", DstPort: "Dst Port|Destination Port",
	Proto:   "Protocol",
	Bytes:   []string{"Total Length of Fwd Packet|Total Length of Fwd Packets", "Total Length of Bwd Packet|Total Length of Bwd Packets"},
	Packets: []string{"Total Fwd Packet|Total Fwd Packets", "Total Bwd packets|Total Backward Packets|Total Bwd Packets"},
	Label:   []string{"Label"},
}

// ParseMapping parses the --map syntax: comma-separated KEY=COLUMN items.
// Keys: start, end, dur, dur_unit (s, ms, us), src, dst, sport, dport,
// proto, bytes, packets, sampling, label, time (unix, unix_ms, unix_us or a
// Go layout), sep ("," ";" "tab" "|"). bytes, packets and label take
// COL+COL to sum (join) several columns.
func ParseMapping(s string) (Mapping, error) {
	var m Mapping
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		k, v, ok := strings.Cut(item, "=")
		if !ok {
			return m, fmt.Errorf("mapping item %q is not KEY=COLUMN", item)
		}
		k = strings.ToLower(strings.TrimSpace(k))
		v = strings.TrimSpace(v)
		switch k {
		case "start":
			m.Start = v
		case "end":
			m.End = v
		case "dur", "duration":
			m.Duration = v
		case "dur_unit":
			switch v {
			case "s":
				m.DurationUnit = time.Second
			case "ms":
				m.DurationUnit = time.Millisecond
			case "us":
				m.DurationUnit = time.Microsecond
			default:
				return m, fmt.Errorf("dur_unit %q: want s, ms or us", v)
			}
		case "src":
			m.Src = v
		case "dst":
			m.Dst = v
		case "sport":
			m.SrcPort = v
		case "dport":
			m.DstPort = v
		case "proto":
			m.Proto = v
		case "bytes":
			m.Bytes = strings.Split(v, "+")
		case "packets":
			m.Packets = strings.Split(v, "+")
		case "sampling":
			m.Sampling = v
		case "label":
			m.Label = strings.Split(v, "+")
		case "time":
			m.TimeFormat = v
		case "sep":
			switch v {
			case ",", "comma":
				m.Sep = ','
			case ";":
				m.Sep = ';'
			case "tab", `\t`:
				m.Sep = '\t'
			case "|", "pipe":
				m.Sep = '|'
			default:
				return m, fmt.Errorf("sep %q: want , ; tab or |", v)
			}
		default:
			return m, fmt.Errorf("unknown mapping key %q (keys: start end dur dur_unit src dst sport dport proto bytes packets sampling label time sep)", k)
		}
	}
	if m.Start == "" || m.Src == "" || m.Dst == "" {
		return m, errors.New("mapping needs at least start, src and dst")
	}
	return m, nil
}

// columns holds resolved column indexes (-1 = absent).
type columns struct {
	start, end, dur, src, dst, sport, dport, proto, sampling int
	bytes, packets, label                                    []int
}

type tableReader struct {
	cr      *csv.Reader
	m       Mapping
	c       columns
	times   timeParser
	durUnit time.Duration
	label   string
	skipped int
}

// newTable reads a delimited file with a header row. With strict, every
// column the mapping names must exist; presets are not strict about
// optional columns, which differ between tool versions.
func newTable(r *bufio.Reader, sep rune, m Mapping, loc *time.Location, strict bool) (*tableReader, error) {
	cr := csv.NewReader(r)
	cr.Comma = sep
	cr.FieldsPerRecord = -1
	cr.LazyQuotes = true
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	idx := map[string]int{}
	for i, h := range header {
		h = trimSpace(strings.TrimPrefix(h, "\ufeff"))
		if _, dup := idx[h]; !dup {
			idx[h] = i
		}
	}
	find := func(spec string) int {
		if spec == "" {
			return -1
		}
		for _, alt := range strings.Split(spec, "|") {
			if i, ok := idx[trimSpace(alt)]; ok {
				return i
			}
		}
		return -1
	}
	findAll := func(specs []string) ([]int, error) {
		var out []int
		for _, s := range specs {
			i := find(s)
			if i < 0 {
				return nil, fmt.Errorf("column %q not in header", s)
			}
			out = append(out, i)
		}
		return out, nil
	}
	t := &tableReader{cr: cr, m: m, times: timeParser{format: m.TimeFormat, loc: loc}, durUnit: m.DurationUnit}
	if t.durUnit == 0 {
		t.durUnit = time.Second
	}
	t.c = columns{
		start: find(m.Start), end: find(m.End), dur: find(m.Duration),
		src: find(m.Src), dst: find(m.Dst), sport: find(m.SrcPort), dport: find(m.DstPort),
		proto: find(m.Proto), sampling: find(m.Sampling),
	}
	for name, i := range map[string]int{"start": t.c.start, "src": t.c.src, "dst": t.c.dst} {
		if i < 0 {
			return nil, fmt.Errorf("required %s column not in header", name)
		}
	}
	for _, opt := range []struct {
		spec string
		i    int
	}{{m.End, t.c.end}, {m.Duration, t.c.dur}, {m.SrcPort, t.c.sport}, {m.DstPort, t.c.dport}, {m.Proto, t.c.proto}, {m.Sampling, t.c.sampling}} {
		if strict && opt.spec != "" && opt.i < 0 {
			return nil, fmt.Errorf("column %q not in header", opt.spec)
		}
	}
	if t.c.bytes, err = findAll(m.Bytes); err != nil {
		return nil, err
	}
	if t.c.packets, err = findAll(m.Packets); err != nil {
		return nil, err
	}
	// Label columns are optional even in presets.
	for _, s := range m.Label {
		if i := find(s); i >= 0 {
			t.c.label = append(t.c.label, i)
		}
	}
	return t, nil
}

func (t *tableReader) Label() string { return t.label }
func (t *tableReader) Skipped() int  { return t.skipped }
func (t *tableReader) Close() error  { return nil }

func (t *tableReader) Next(rec *flow.Record) error {
	for {
		row, err := t.cr.Read()
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				t.skipped++
				continue
			}
			if errors.Is(err, io.EOF) {
				return io.EOF
			}
			return fmt.Errorf("read row: %w", err)
		}
		*rec = flow.Record{}
		if t.parse(row, rec) {
			t.label = ""
			for i, c := range t.c.label {
				if c < len(row) {
					if i > 0 {
						t.label += " "
					}
					t.label += row[c]
				}
			}
			return nil
		}
		t.skipped++
	}
}

func field(row []string, i int) string {
	if i < 0 || i >= len(row) {
		return ""
	}
	return trimSpace(row[i])
}

func (t *tableReader) parse(row []string, rec *flow.Record) bool {
	start, ok := t.times.parse(field(row, t.c.start))
	if !ok {
		return false
	}
	rec.TimeStartMs = start
	rec.TimeEndMs = start
	if s := field(row, t.c.end); s != "" {
		if end, ok := t.times.parse(s); ok && end >= start {
			rec.TimeEndMs = end
		}
	} else if s := field(row, t.c.dur); s != "" {
		if d, err := strconv.ParseFloat(s, 64); err == nil && d >= 0 && !math.IsInf(d, 0) {
			rec.TimeEndMs = start + int64(d*float64(t.durUnit)/float64(time.Millisecond))
		}
	}
	src, ok1 := parseAddr(field(row, t.c.src))
	dst, ok2 := parseAddr(field(row, t.c.dst))
	if !ok1 || !ok2 {
		return false
	}
	rec.SrcAddr, rec.DstAddr = src, dst
	if t.c.proto >= 0 {
		p, ok := parseProto(field(row, t.c.proto))
		if !ok {
			return false
		}
		rec.Proto = p
	}
	rec.SrcPort = parsePort(field(row, t.c.sport))
	rec.DstPort = parsePort(field(row, t.c.dport))
	rec.Bytes = sumCols(row, t.c.bytes)
	rec.Packets = sumCols(row, t.c.packets)
	rec.SamplingRate = 1
	if t.c.sampling >= 0 {
		if n, err := strconv.ParseUint(field(row, t.c.sampling), 10, 32); err == nil && n > 0 {
			rec.SamplingRate = uint32(n)
		}
	}
	rec.Protocol = flow.ProtocolFile
	rec.TimeReceivedMs = rec.TimeEndMs
	return true
}

// otherProtos are protocol names that flow tools print but flow.ParseIPProto
// does not know. Argus names some UDP applications (rtp, rtcp, udt) in its
// protocol column.
var otherProtos = map[string]uint8{"igmp": 2, "ipv6": 41, "pim": 103, "rtp": 17, "rtcp": 17, "udt": 17, "ospf": 89}

// parseProto parses a protocol name or number; non-IP names (arp) fail.
func parseProto(s string) (uint8, bool) {
	if p, err := flow.ParseIPProto(s); err == nil {
		return uint8(p), true
	}
	p, ok := otherProtos[strings.ToLower(s)]
	return p, ok
}

func sumCols(row []string, cols []int) uint64 {
	var sum uint64
	for _, c := range cols {
		s := field(row, c)
		if s == "" || s == "-" {
			continue
		}
		if n, err := strconv.ParseUint(s, 10, 64); err == nil {
			sum += n
		} else if f, err := strconv.ParseFloat(s, 64); err == nil && f > 0 && f < 1e19 {
			sum += uint64(f)
		}
	}
	return sum
}

// parseAddr parses an IPv4 or IPv6 address (a zone is dropped).
func parseAddr(s string) (flow.RawAddr, bool) {
	if i := strings.IndexByte(s, '%'); i >= 0 {
		s = s[:i]
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return flow.RawAddr{}, false
	}
	return flow.RawAddr(a.As16()), true
}

// parsePort parses a decimal or 0x-prefixed hexadecimal port (Argus writes
// ICMP type/code as hex); anything else is 0.
func parsePort(s string) uint16 {
	if s == "" {
		return 0
	}
	n, err := strconv.ParseUint(s, 0, 16)
	if err != nil {
		return 0
	}
	return uint16(n)
}

// timeParser parses timestamps, remembering the layout that worked.
type timeParser struct {
	format string
	loc    *time.Location
	layout string
}

var layouts = []string{
	"2006/01/02 15:04:05.999999999",
	"2006-01-02 15:04:05.999999999",
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999",
	"02/01/2006 15:04:05",
	"2/1/2006 15:04:05",
	"2/1/2006 15:04",
}

// parse returns Unix milliseconds.
func (p *timeParser) parse(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	switch p.format {
	case "unix", "":
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1e11 {
				return 0, false
			}
			return int64(math.Round(f * 1000)), true
		}
		if p.format == "unix" {
			return 0, false
		}
	case "unix_ms", "unix_us":
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return 0, false
		}
		if p.format == "unix_us" {
			n /= 1000
		}
		return n, true
	default:
		t, err := time.ParseInLocation(p.format, s, p.loc)
		if err != nil {
			return 0, false
		}
		return t.UnixMilli(), true
	}
	if p.layout != "" {
		if t, err := time.ParseInLocation(p.layout, s, p.loc); err == nil {
			return t.UnixMilli(), true
		}
	}
	for _, l := range layouts {
		if t, err := time.ParseInLocation(l, s, p.loc); err == nil {
			p.layout = l
			return t.UnixMilli(), true
		}
	}
	return 0, false
}
