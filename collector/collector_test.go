package collector

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	nt "github.com/ccflow/ccflow/collector/netflow/netflowtest"
	"github.com/ccflow/ccflow/collector/pcap"
	"github.com/ccflow/ccflow/config"
	"github.com/ccflow/ccflow/flow"
)

func TestDefaultConfigValidates(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default configuration does not validate: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(c *Config)
		key  string
	}{
		{"addr without port", func(c *Config) { c.NetFlow.Addr = "127.0.0.1" }, "netflow.addr"},
		{"host name", func(c *Config) { c.IPFIX.Addr = "collector:4739" }, "ipfix.addr"},
		{"port out of range", func(c *Config) { c.SFlow.Addr = ":70000" }, "sflow.addr"},
		{"no sockets", func(c *Config) { c.SFlow.Sockets = 0 }, "sflow.sockets"},
		{"read batch", func(c *Config) { c.NetFlow.ReadBatch = 0 }, "netflow.read_batch"},
		{"tiny datagram", func(c *Config) { c.NetFlow.MaxDatagram = 100 }, "netflow.max_datagram"},
		{"bad cidr", func(c *Config) { c.Exporters = []string{"192.0.2.0/33"} }, "exporters"},
		{"no exporters", func(c *Config) { c.MaxExporters = 0 }, "max_exporters"},
		{"no templates", func(c *Config) { c.Templates.Max = 0 }, "templates.max"},
		{"negative expiry", func(c *Config) { c.Templates.Expiry = -time.Second }, "templates.expiry"},
		{"pending too big", func(c *Config) { c.Pending.Bytes = 1 << 30 }, "pending.bytes"},
		{"negative log rate", func(c *Config) { c.ErrorLogRate = -1 }, "error_log_rate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.edit(&c)
			var fe *config.FieldError
			if err := c.Validate(); !errors.As(err, &fe) || fe.Key != tt.key {
				t.Errorf("Validate() = %v, want an error for key %s", err, tt.key)
			}
		})
	}
	c := DefaultConfig()
	c.Exporters = []string{"192.0.2.0/24", "2001:db8::1"}
	c.IPFIX.Addr = ""
	if err := c.Validate(); err != nil {
		t.Errorf("valid configuration rejected: %v", err)
	}
}

// loopbackConfig listens on ephemeral loopback ports.
func loopbackConfig() Config {
	c := DefaultConfig()
	c.NetFlow.Addr, c.IPFIX.Addr, c.SFlow.Addr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	return c
}

// counting is a Handler that counts records.
type counting struct{ n atomic.Int64 }

func (c *counting) HandleFlows(_ int, recs []flow.Record) { c.n.Add(int64(len(recs))) }

func startCollector(t *testing.T, cfg Config, h Handler, reg prometheus.Registerer, log *slog.Logger) *Collector {
	t.Helper()
	c, err := New(cfg, Deps{Handler: h, Registerer: reg, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	return c
}

func send(t *testing.T, to netip.AddrPort, dgrams ...[]byte) {
	t.Helper()
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, b := range dgrams {
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
	}
}

func payloads(ds []pcap.Datagram) [][]byte {
	var out [][]byte
	for _, d := range ds {
		out = append(out, d.Payload)
	}
	return out
}

func TestCollectorOverSockets(t *testing.T) {
	cfg := loopbackConfig()
	cfg.NetFlow.Sockets, cfg.IPFIX.Sockets = 2, 2
	reg := prometheus.NewRegistry()
	h := &counting{}
	c := startCollector(t, cfg, h, reg, nil)
	addrs := c.Addrs()
	if len(addrs) != 3 {
		t.Fatalf("Addrs() = %v", addrs)
	}
	inputs := []struct {
		listener, file string
	}{
		{"netflow", "netflow5.pcap"}, {"netflow", "netflow9.pcap"}, {"ipfix", "ipfix.pcap"},
		{"sflow", "sflow5-ethernet.pcap"}, {"sflow", "sflow5-ipv4.pcap"},
	}
	want := 0
	for _, in := range inputs {
		ds := corpusDatagrams(t, in.file)
		want += len(decodeAll(t, ds))
		send(t, addrs[in.listener], payloads(ds)...)
	}
	if !waitFor(t, 10*time.Second, func() bool { return h.n.Load() == int64(want) }) {
		t.Fatalf("handler got %d records, want %d", h.n.Load(), want)
	}
	for proto, n := range map[string]float64{"netflow5": 594, "netflow9": 594, "ipfix": 594} {
		if got := testutil.ToFloat64(c.m.flows.WithLabelValues("127.0.0.1", proto)); got != n {
			t.Errorf("flows{protocol=%s} = %v, want %v", proto, got, n)
		}
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := c.Start(context.Background()); !errors.Is(err, ErrStarted) {
		t.Errorf("Start after Stop = %v", err)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("metrics lint: %v %v", problems, err)
	}
	for _, name := range []string{"ccflow_collector_datagrams_total", "ccflow_collector_flows_total", "ccflow_collector_templates", "ccflow_collector_template_misses_total"} {
		if n, _ := testutil.GatherAndCount(reg, name); n == 0 {
			t.Errorf("metric %s missing", name)
		}
	}
}

func TestPortInUseNamesTheKey(t *testing.T) {
	busy, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := loopbackConfig()
	cfg.SFlow.Addr = busy.LocalAddr().String()
	c, err := New(cfg, Deps{Handler: &counting{}})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "collector.sflow.addr") {
		t.Fatalf("Start = %v, want an error naming collector.sflow.addr", err)
	}
	// Nothing was left listening: the other listeners can bind again.
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
}

func TestContextCancelStopsWorkers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	c, err := New(loopbackConfig(), Deps{Handler: &counting{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	done := make(chan struct{})
	go func() { _ = c.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not return after the context was canceled")
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New(DefaultConfig(), Deps{}); !errors.Is(err, ErrNoHandler) {
		t.Errorf("New without handler = %v", err)
	}
	bad := DefaultConfig()
	bad.MaxExporters = 0
	if _, err := New(bad, Deps{Handler: &counting{}}); err == nil {
		t.Error("New accepted an invalid configuration")
	}
	if err := (&Collector{stop: make(chan struct{})}).Stop(); err != nil {
		t.Errorf("Stop before Start = %v", err)
	}
}

func TestAllowlistAndExporterLimit(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Exporters = []string{"192.0.2.0/28"}
	cfg.MaxExporters = 1
	h := newHarness(t, cfg)
	b := corpusDatagrams(t, "netflow5.pcap")[0].Payload
	if n := len(h.send(exporterA, b)); n == 0 {
		t.Fatal("allowed exporter's flows were dropped")
	}
	h.send(netip.MustParseAddr("192.0.2.11"), b)   // allowed, but beyond max_exporters
	h.send(netip.MustParseAddr("198.51.100.9"), b) // not allowed
	if got := h.metric("decode_errors", "other", "netflow5", "exporter_limit"); got != 1 {
		t.Errorf("exporter_limit = %v, want 1", got)
	}
	if got := h.metric("decode_errors", "other", "netflow5", "not_allowed"); got != 1 {
		t.Errorf("not_allowed = %v, want 1", got)
	}
}

// blocking is a Handler that blocks its first call until released.
type blocking struct {
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (b *blocking) HandleFlows(int, []flow.Record) {
	b.once.Do(func() {
		close(b.entered)
		<-b.release
	})
}

func TestKernelDropsCounted(t *testing.T) {
	cfg := loopbackConfig()
	cfg.NetFlow.ReceiveBuffer = 1 // the kernel's minimum
	h := &blocking{entered: make(chan struct{}), release: make(chan struct{})}
	c := startCollector(t, cfg, h, nil, nil)
	b := corpusDatagrams(t, "netflow5.pcap")[0].Payload
	to := c.Addrs()["netflow"]
	send(t, to, b)
	<-h.entered // the worker is stuck in the handler: the socket fills up
	burst := make([][]byte, 300)
	for i := range burst {
		burst[i] = b
	}
	send(t, to, burst...)
	close(h.release)
	drops := c.m.socketDrops.WithLabelValues("netflow")
	if !waitFor(t, 10*time.Second, func() bool {
		send(t, to, b) // SO_RXQ_OVFL arrives with the next datagram read
		return testutil.ToFloat64(drops) > 0
	}) {
		t.Fatal("no socket drops counted")
	}
}

func TestLogsAreRateLimitedAndRedacted(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	cfg := DefaultConfig()
	cfg.ErrorLogRate = 2
	reg := prometheus.NewRegistry()
	c, err := New(cfg, Deps{Handler: &collecting{}, Logger: log, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	w := newWorker(c, &socket{spec: listenerSpec{key: "ipfix", cfg: cfg.IPFIX, fallback: flow.ProtocolIPFIX}})
	// Canary flow addresses in valid and broken datagrams.
	canary := nt.Record(nt.Addr("198.51.100.77"), nt.Addr("203.0.113.77"), nt.U32(1), nt.U32(1))
	good := nt.IPFIX(1, 1).Template(300, tSrc4, tDst4, tOctets4, tPkts4).Data(300, canary).Bytes()
	broken := nt.IPFIX(1, 1).Template(301, nt.Field{Type: 82, Length: nt.VarLen}, tSrc4).Data(301, append([]byte{200}, canary...)).Bytes()
	for range 100 {
		w.datagram(good, exporterA, false, 1)
		w.datagram(broken, exporterA, false, 1)
		w.datagram(broken[:len(broken)-7], exporterA, false, 1)
	}
	lines := strings.Count(logs.String(), "decode error")
	if lines == 0 || lines > 4 {
		t.Errorf("%d decode-error log lines for 200 errors at 2/s", lines)
	}
	var metricsText bytes.Buffer
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		metricsText.WriteString(mf.String())
	}
	for _, s := range []string{"198.51.100.77", "203.0.113.77", "c633644d", "cb00714d", "198, 51, 100, 77", "203 0 113 77"} {
		if strings.Contains(logs.String(), s) || strings.Contains(metricsText.String(), s) {
			t.Errorf("a flow address (%q) reached the logs or metrics", s)
		}
	}
	if !strings.Contains(logs.String(), exporterA.String()) {
		t.Error("log lines do not name the exporter")
	}
}

func TestDecodePathAllocs(t *testing.T) {
	for _, file := range []string{"netflow5.pcap", "netflow9.pcap", "ipfix.pcap", "sflow5-ethernet.pcap", "sflow5-ipv4.pcap"} {
		t.Run(file, func(t *testing.T) {
			ds := corpusDatagrams(t, file)
			w := testWorker(t, DefaultConfig())
			pass := func() {
				for _, d := range ds {
					w.datagram(d.Payload, d.Src.Addr(), false, 1)
					w.out = w.out[:0]
				}
			}
			pass()
			if n := testing.AllocsPerRun(10, pass); n != 0 {
				t.Errorf("%.1f allocations per pass over %d datagrams, want 0", n, len(ds))
			}
		})
	}
}
