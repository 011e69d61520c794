package archive

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/ccflow/ccflow/flow"
)

// zeekReader reads a Zeek conn.log in its TSV form. Byte counts are the IP
// bytes of both directions (orig_ip_bytes + resp_ip_bytes) when logged,
// else the payload bytes; packets are orig_pkts + resp_pkts.
type zeekReader struct {
	br                                     *bufio.Reader
	sep                                    string
	unset                                  string
	col                                    map[string]int
	ts, src, dst, sport, dport, proto, dur int
	bytes, packets, labels                 []int
	label                                  string
	skipped                                int
	fields                                 []string
}

func newZeek(br *bufio.Reader, _ *time.Location) (*zeekReader, error) {
	z := &zeekReader{br: br, sep: "\t", unset: "-"}
	// Read the header lines up to #fields.
	for {
		line, err := z.line()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, errors.New("zeek log has no #fields header")
			}
			return nil, fmt.Errorf("read zeek header: %w", err)
		}
		if !strings.HasPrefix(line, "#") {
			return nil, errors.New("zeek log has no #fields header before the first row")
		}
		switch {
		case strings.HasPrefix(line, "#separator "):
			s := strings.TrimPrefix(line, "#separator ")
			if u, err := strconv.Unquote(`"` + s + `"`); err == nil && u != "" {
				z.sep = u
			}
		case strings.HasPrefix(line, "#unset_field"):
			if parts := strings.SplitN(line, z.sep, 2); len(parts) == 2 {
				z.unset = parts[1]
			}
		case strings.HasPrefix(line, "#fields"):
			names := strings.Split(line, z.sep)[1:]
			z.col = make(map[string]int, len(names))
			for i, n := range names {
				z.col[n] = i
			}
			return z, z.resolve()
		}
	}
}

func (z *zeekReader) resolve() error {
	get := func(n string) int {
		if i, ok := z.col[n]; ok {
			return i
		}
		return -1
	}
	z.ts, z.src, z.dst = get("ts"), get("id.orig_h"), get("id.resp_h")
	z.sport, z.dport, z.proto, z.dur = get("id.orig_p"), get("id.resp_p"), get("proto"), get("duration")
	if z.ts < 0 || z.src < 0 || z.dst < 0 {
		return errors.New("zeek #fields lacks ts, id.orig_h or id.resp_h (is this a conn.log?)")
	}
	if get("orig_ip_bytes") >= 0 && get("resp_ip_bytes") >= 0 {
		z.bytes = []int{get("orig_ip_bytes"), get("resp_ip_bytes")}
	} else if get("orig_bytes") >= 0 && get("resp_bytes") >= 0 {
		z.bytes = []int{get("orig_bytes"), get("resp_bytes")}
	}
	for _, n := range []string{"orig_pkts", "resp_pkts"} {
		if i := get(n); i >= 0 {
			z.packets = append(z.packets, i)
		}
	}
	for _, n := range []string{"label", "detailedlabel"} {
		if i := get(n); i >= 0 {
			z.labels = append(z.labels, i)
		}
	}
	return nil
}

func (z *zeekReader) line() (string, error) {
	s, err := z.br.ReadString('\n')
	if err != nil && (s == "" || !errors.Is(err, io.EOF)) {
		return "", err
	}
	return strings.TrimRight(s, "\r\n"), nil
}

func (z *zeekReader) Label() string { return z.label }
func (z *zeekReader) Skipped() int  { return z.skipped }
func (z *zeekReader) Close() error  { return nil }

func (z *zeekReader) Next(rec *flow.Record) error {
	for {
		line, err := z.line()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return io.EOF
			}
			return fmt.Errorf("read zeek row: %w", err)
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		z.fields = splitInto(z.fields[:0], line, z.sep)
		*rec = flow.Record{}
		if z.parse(rec) {
			z.label = ""
			for i, c := range z.labels {
				if v := z.get(c); v != "" && v != "(empty)" {
					if i > 0 && z.label != "" {
						z.label += " "
					}
					z.label += v
				}
			}
			return nil
		}
		z.skipped++
	}
}

func splitInto(dst []string, s, sep string) []string {
	for {
		i := strings.Index(s, sep)
		if i < 0 {
			return append(dst, s)
		}
		dst = append(dst, s[:i])
		s = s[i+len(sep):]
	}
}

func (z *zeekReader) get(i int) string {
	if i < 0 || i >= len(z.fields) {
		return ""
	}
	v := z.fields[i]
	if v == z.unset {
		return ""
	}
	return v
}

func (z *zeekReader) parse(rec *flow.Record) bool {
	ts, err := strconv.ParseFloat(z.get(z.ts), 64)
	if err != nil || ts < 0 || ts > 1e11 || math.IsNaN(ts) {
		return false
	}
	rec.TimeStartMs = int64(math.Round(ts * 1000))
	rec.TimeEndMs = rec.TimeStartMs
	if d, err := strconv.ParseFloat(z.get(z.dur), 64); err == nil && d >= 0 && d < 1e9 {
		rec.TimeEndMs += int64(d * 1000)
	}
	src, ok1 := parseAddr(z.get(z.src))
	dst, ok2 := parseAddr(z.get(z.dst))
	if !ok1 || !ok2 {
		return false
	}
	rec.SrcAddr, rec.DstAddr = src, dst
	if p := z.get(z.proto); p != "" {
		v, ok := parseProto(p)
		if !ok {
			return false
		}
		rec.Proto = v
	}
	// Zeek logs ICMP type and code in the port columns, like NetFlow's
	// type<<8|code only for the destination; keep both as logged.
	rec.SrcPort = parsePort(z.get(z.sport))
	rec.DstPort = parsePort(z.get(z.dport))
	for _, c := range z.bytes {
		if n, err := strconv.ParseUint(z.get(c), 10, 64); err == nil {
			rec.Bytes += n
		}
	}
	for _, c := range z.packets {
		if n, err := strconv.ParseUint(z.get(c), 10, 64); err == nil {
			rec.Packets += n
		}
	}
	rec.SamplingRate = 1
	rec.Protocol = flow.ProtocolFile
	rec.TimeReceivedMs = rec.TimeEndMs
	return true
}
