// Command ccflow-loadgen replays the UDP datagrams of a capture file (for
// example collector/testdata/netflow9.pcap, recorded from softflowd) to a
// collector at a fixed rate and prints what it sent:
//
//	go run ./bench/cmd/ccflow-loadgen -pcap collector/testdata/netflow9.pcap \
//	    -target 127.0.0.1:2055 -rate 100000 -duration 10s -sources 4
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"time"

	"github.com/ccflow/ccflow/bench/loadgen"
	"github.com/ccflow/ccflow/collector/pcap"
)

func main() {
	file := flag.String("pcap", "collector/testdata/netflow9.pcap", "capture `FILE` whose UDP payloads are replayed in a loop")
	target := flag.String("target", "127.0.0.1:2055", "collector `HOST:PORT`")
	rate := flag.Float64("rate", 10000, "datagrams per second (0: as fast as possible)")
	duration := flag.Duration("duration", 10*time.Second, "how long to send")
	sources := flag.Int("sources", 4, "source sockets (distinct source ports)")
	batch := flag.Int("batch", 32, "datagrams per sendmmsg call")
	flag.Parse()
	if err := run(*file, *target, *rate, *duration, *sources, *batch); err != nil {
		fmt.Fprintln(os.Stderr, "ccflow-loadgen:", err)
		os.Exit(1)
	}
}

func run(file, target string, rate float64, duration time.Duration, sources, batch int) error {
	to, err := netip.ParseAddrPort(target)
	if err != nil {
		return fmt.Errorf("-target: %w", err)
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	ds, err := pcap.ReadDatagrams(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("read %s: %w", file, err)
	}
	var payloads [][]byte
	for _, d := range ds {
		payloads = append(payloads, d.Payload)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := loadgen.Run(ctx, loadgen.Config{Target: to, Datagrams: payloads, Rate: rate, Duration: duration, Sources: sources, Batch: batch})
	if err != nil {
		return err
	}
	fmt.Printf("sent %d datagrams in %s: %.0f datagrams/s\n", res.Sent, res.Elapsed.Round(time.Millisecond), res.Rate())
	return nil
}
