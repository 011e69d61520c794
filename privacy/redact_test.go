package privacy

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/privacy/canary"
)

func boundRedactor(t *testing.T) *Redactor {
	t.Helper()
	subs, err := LoadSubscribers(testConfig(""))
	if err != nil {
		t.Fatal(err)
	}
	r := NewRedactor()
	r.bind(subs)
	return r
}

func TestRedactString(t *testing.T) {
	r := boundRedactor(t)
	tests := []struct{ in, want string }{
		{"no address here", "no address here"},
		{"from 192.0.2.7 to 198.51.100.9", "from REDACTED to 198.51.100.9"},
		{"192.0.2.7:5353", "REDACTED:5353"},
		{"tcpdump 192.0.2.7.5353 > 198.51.100.9.53", "tcpdump REDACTED.5353 > 198.51.100.9.53"},
		{"[2001:db8:1::7]:443", "[REDACTED]:443"},
		{"2001:DB8:1::7", "REDACTED"},
		{"2001:0db8:0001:0000:0000:0000:0000:0007.", "REDACTED"},
		{"::ffff:192.0.2.7", "REDACTED"},
		{"::ffff:c000:207", "REDACTED"},
		{"host-192-0-2-7.dsl.example.net", "host-REDACTED.dsl.example.net"},
		{"7.2.0.192.in-addr.arpa", "REDACTED.in-addr.arpa"},
		{"hex c0000207 and C0000207", "hex REDACTED and REDACTED"},
		{"00000000000000000000ffffc0000207", "REDACTED"},
		{"20010db8000100000000000000000007", "REDACTED"},
		{"bytes [192 0 2 7] json [0,0,0,0,0,0,0,0,0,0,255,255,192,0,2,7]", "bytes REDACTED json REDACTED"},
		{"remote 2001:db8:ffff::1 stays", "remote 2001:db8:ffff::1 stays"},
		{"10.1.2.3 and 10.4.5.6", "REDACTED and REDACTED"},
		{"version 1.2.3.4 of x", "version 1.2.3.4 of x"},
		{"time 2024-05-15T12:00:00.123Z", "time 2024-05-15T12:00:00.123Z"},
		{"192.0.2.7", "REDACTED"},
		{"{a:{addr:{hi:0 lo:281473902969351} z:{value:0x1}}}", "{a:{addr:{REDACTED} z:{value:0x1}}}"},
	}
	for _, tt := range tests {
		got, _ := r.RedactString(tt.in)
		if got != tt.want {
			t.Errorf("RedactString(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

type holder struct {
	Name string
	Addr [16]byte
}

type hidden struct{ a netip.Addr }

type stringer struct{}

func (stringer) String() string { return "peer=192.0.2.7" }

func TestUnboundRedactorRedactsEveryAddress(t *testing.T) {
	r := NewRedactor()
	if got, _ := r.RedactString("exporter 198.51.100.9 sub 192.0.2.7"); got != "exporter REDACTED sub REDACTED" {
		t.Errorf("unbound: %q", got)
	}
	r.bind(boundRedactor(t).subs.Load())
	if got, _ := r.RedactString("exporter 198.51.100.9 sub 192.0.2.7"); got != "exporter 198.51.100.9 sub REDACTED" {
		t.Errorf("bound: %q", got)
	}
}

// logEverything logs subscriber addresses in every form a careless caller
// could use, plus a remote address that must stay readable.
func logEverything(l *slog.Logger) {
	sub4, sub6 := netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8:1::7")
	mapped := netip.AddrFrom16(sub4.As16())
	l.Info("flow from 192.0.2.7 to 198.51.100.9", "remote", netip.MustParseAddr("198.51.100.9"))
	l.Info("values",
		"netip", sub4, "netip6", sub6, "mapped", mapped,
		"addrport", netip.AddrPortFrom(sub4, 53), "prefix", netip.PrefixFrom(sub4, 32),
		"netip_ptr", &sub6,
		"net_ip", net.ParseIP("192.0.2.7"), "net_ip6", net.ParseIP("2001:db8:1::7"),
		"udpaddr", &net.UDPAddr{IP: net.ParseIP("192.0.2.7"), Port: 53},
		"bytes16", sub4.As16(), "bytes4", sub4.As4(), "slice", sub6.AsSlice(),
		"flow_addr", flow.AddrFrom(sub4), "raw_addr", flow.RawAddr(sub4.As16()),
		"struct", holder{Name: "x", Addr: sub6.As16()}, "ptr", &holder{Addr: sub4.As16()},
		"hidden", hidden{a: sub4},
		"record", flow.Record{SrcAddr: flow.RawAddr(sub4.As16())},
		"map", map[string]netip.Addr{"a": sub6},
		"err", fmt.Errorf("dial %s: %w", "192.0.2.7:443", errors.New("refused")),
		"err6", &net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: sub6.AsSlice(), Port: 443}, Err: errors.New("refused")},
		"stringer", stringer{},
		"text", "ptr host-192-0-2-7.example hex c0000207 v6hex 20010db8000100000000000000000007",
		slog.Group("g", "inner", sub4, "s", "[2001:db8:1::7]:443"),
		"192.0.2.7", "address as a key",
	)
	l.With("conn", sub4).Warn("with attrs", "peer", sub6)
	l.WithGroup("grp").Error("in group", "a", sub4)
}

// TestLogsNeverCarrySubscriberAddresses proves the backstop: whatever form a
// subscriber address takes in a log call, no byte form of it reaches the
// output of either slog handler, while remote addresses stay readable. The
// positive control logs the same without the backstop and finds them.
func TestLogsNeverCarrySubscriberAddresses(t *testing.T) {
	r := boundRedactor(t)
	sc := canary.NewScanner(netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8:1::7"))
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			run := func(replace func([]string, slog.Attr) slog.Attr) string {
				var buf bytes.Buffer
				opts := &slog.HandlerOptions{ReplaceAttr: replace}
				var h slog.Handler = slog.NewTextHandler(&buf, opts)
				if format == "json" {
					h = slog.NewJSONHandler(&buf, opts)
				}
				logEverything(slog.New(h))
				return buf.String()
			}
			out := run(r.ReplaceAttr)
			hits, err := sc.ScanBytes("log."+format, []byte(out))
			if err != nil {
				t.Fatal(err)
			}
			if len(hits) > 0 {
				t.Errorf("%s\nlog output:\n%s", canary.Report(hits, 20), out)
			}
			if !strings.Contains(out, "198.51.100.9") {
				t.Errorf("the remote address was redacted too:\n%s", out)
			}
			// Positive control: without the backstop the canaries leak
			// (which also proves the scanner sees this output).
			control, _ := sc.ScanBytes("log."+format, []byte(run(nil)))
			if len(control) < 10 {
				t.Errorf("positive control found only %d canary hits", len(control))
			}
		})
	}
	if r.Redacted() == 0 {
		t.Error("Redacted() counts nothing")
	}
}
