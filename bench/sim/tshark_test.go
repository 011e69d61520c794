package sim_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ccflow/ccflow/bench/sim"
	"github.com/ccflow/ccflow/testenv"
)

// TestTsharkDissects writes datagrams of every format and variant into a
// pcap file and has tshark (Wireshark's dissectors, an independent
// implementation) dissect them: every packet must be recognized as the
// intended protocol, without malformed packets or expert warnings and
// errors, and tshark must count the flow records and samples that were sent.
func TestTsharkDissects(t *testing.T) {
	tshark := testenv.Tool(t, "tshark")
	all := testSteps(t)
	steps := append(all[:40:40], all[300:]...) // 40 s and the edge cases
	type variant struct {
		name string
		f    sim.Format
		port uint16
		cfg  sim.EncoderConfig
	}
	variants := []variant{
		{"netflow9", sim.FormatNetFlow9, 2055, sim.EncoderConfig{}},
		{"netflow9-sampled", sim.FormatNetFlow9, 2055, sim.EncoderConfig{Sampling: 10}},
		{"ipfix", sim.FormatIPFIX, 4739, sim.EncoderConfig{}},
		{"ipfix-sampled", sim.FormatIPFIX, 4739, sim.EncoderConfig{Sampling: 10}},
		{"sflow-ethernet", sim.FormatSFlow5, 6343, sim.EncoderConfig{Sampling: 16}},
		{"sflow-ip", sim.FormatSFlow5, 6343, sim.EncoderConfig{Sampling: 16, SFlowHeader: sim.SFlowHeaderIP}},
	}
	for i, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), v.name+".pcap")
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			p, err := sim.NewPcap(f)
			if err != nil {
				t.Fatal(err)
			}
			clock := testStart
			p.Now = func() time.Time { clock = clock.Add(time.Millisecond); return clock }
			src := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(40000+i))
			dst := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), v.port)
			w := p.Writer(src, dst)
			var flows int
			cfg := v.cfg
			cfg.ObservationDomain = uint32(i + 1)
			cfg.TemplateRefresh = 16
			cfg.Trace = func(r *sim.Record) {
				if v.f == sim.FormatSFlow5 {
					flows += int(r.Packets)
				} else {
					flows++
				}
			}
			enc, err := sim.NewEncoder(v.f, cfg)
			if err != nil {
				t.Fatal(err)
			}
			dgrams := encodeAll(t, enc, steps, 1400)
			for _, d := range dgrams {
				if _, err := w.Write(d); err != nil {
					t.Fatal(err)
				}
			}
			if err := p.Flush(); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}

			// Expert information: nothing above "chat" level, and no
			// malformed packet.
			// IPv4 header checksums (outer and sampled) are validated.
			out := runTshark(t, tshark, "-o", "ip.check_checksum:TRUE", "-r", path, "-q", "-z", "expert,note")
			if strings.Contains(out, "Malformed") || strings.Contains(out, "Errors (") || strings.Contains(out, "Warnings (") || strings.Contains(out, "Notes (") {
				t.Fatalf("tshark reports problems:\n%s", out)
			}
			// One pass for the rest: every packet is the intended
			// protocol, tshark counts the records / samples that were sent
			// and reads the announced sampling rate.
			proto, count, rate := "cflow", "cflow.protocol", "cflow.sampling_interval"
			if v.f == sim.FormatSFlow5 {
				proto, count, rate = "sflow", "sflow.flow_sample.sequence_number", "sflow.flow_sample.sampling_rate"
			}
			out = runTshark(t, tshark, "-r", path, "-T", "fields", "-E", "separator=;", "-E", "occurrence=a", "-E", "aggregator=,",
				"-e", "frame.protocols", "-e", count, "-e", rate)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != len(dgrams) {
				t.Fatalf("tshark read %d packets, %d written", len(lines), len(dgrams))
			}
			got, rates := 0, map[string]bool{}
			for k, l := range lines {
				cols := strings.Split(l, ";")
				if len(cols) != 3 || !strings.HasPrefix(cols[0], "eth:ethertype:ip:udp:"+proto) {
					t.Fatalf("packet %d dissected as %q, want eth:ethertype:ip:udp:%s...", k+1, l, proto)
				}
				if cols[1] != "" {
					got += strings.Count(cols[1], ",") + 1
				}
				for _, r := range strings.Split(cols[2], ",") {
					rates[r] = true
				}
			}
			if got != flows {
				t.Errorf("tshark found %d %s, %d sent", got, count, flows)
			}
			if cfg.Sampling > 1 && !rates[fmt.Sprint(cfg.Sampling)] {
				t.Errorf("tshark found no %s of %d (%v)", rate, cfg.Sampling, rates)
			}
			t.Logf("%d datagrams, %d flows or samples", len(dgrams), flows)
		})
	}
}

func runTshark(t *testing.T, tshark string, args ...string) string {
	t.Helper()
	// Decode the NetFlow port as cflow explicitly, whatever the local
	// preferences say.
	args = append([]string{"-d", "udp.port==2055,cflow", "-d", "udp.port==4739,cflow", "-d", "udp.port==6343,sflow"}, args...)
	cmd := exec.Command(tshark, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	if s := strings.TrimSpace(filterTsharkStderr(stderr.String())); s != "" {
		t.Fatalf("tshark %s: %s", strings.Join(args, " "), s)
	}
	return string(out)
}

// filterTsharkStderr drops tshark's warning about running as root.
func filterTsharkStderr(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, "Running as user") || strings.TrimSpace(l) == "" {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}
