// Package loadgen replays recorded flow-export datagrams (NetFlow, IPFIX,
// sFlow) to a collector at a target rate: the exporter side of the
// collector's loopback benchmark (bench/loopback) and of manual load tests
// (bench/cmd/ccflow-loadgen).
//
// Datagrams are sent in batches with sendmmsg from several source sockets
// (distinct source ports, so that a collector with SO_REUSEPORT sockets sees
// several flows of traffic), paced against the wall clock: after each batch
// the sender sleeps until the next batch is due, and catches up without
// sleeping when it is late. Production code must not import this package.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Config describes one replay.
type Config struct {
	// Target is the collector's UDP address.
	Target netip.AddrPort
	// Datagrams are replayed in order, from the first again after the
	// last (templates in the first datagrams are thus resent).
	Datagrams [][]byte
	// Rate is the target in datagrams per second; 0 sends as fast as
	// possible.
	Rate float64
	// Duration stops the replay after this long (0: no limit).
	Duration time.Duration
	// Count stops the replay after this many datagrams (0: no limit).
	Count int
	// Sources is the number of source sockets (default 1).
	Sources int
	// Batch is the number of datagrams per sendmmsg call (default 32).
	Batch int
}

// Result is what a replay did.
type Result struct {
	// Sent is the number of datagrams the kernel accepted.
	Sent int
	// Elapsed is the wall time of the replay.
	Elapsed time.Duration
}

// Rate returns the achieved rate in datagrams per second.
func (r Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Sent) / r.Elapsed.Seconds()
}

// writer is a connected socket that sends batches (ipv4.PacketConn and
// ipv6.PacketConn share the Message type).
type writer interface {
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// Run replays cfg.Datagrams until Duration or Count is reached or ctx is
// canceled (which is not an error).
func Run(ctx context.Context, cfg Config) (Result, error) {
	if len(cfg.Datagrams) == 0 {
		return Result{}, errors.New("loadgen: no datagrams to replay")
	}
	if cfg.Duration <= 0 && cfg.Count <= 0 && ctx.Done() == nil {
		return Result{}, errors.New("loadgen: no Duration, Count or cancelable context: the replay would not end")
	}
	sources, batch := max(cfg.Sources, 1), cfg.Batch
	if batch <= 0 {
		batch = 32
	}
	var ws []writer
	for range sources {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(cfg.Target))
		if err != nil {
			return Result{}, fmt.Errorf("loadgen: dial %s: %w", cfg.Target, err)
		}
		defer c.Close()
		_ = c.SetWriteBuffer(4 << 20)
		if cfg.Target.Addr().Unmap().Is4() {
			ws = append(ws, ipv4.NewPacketConn(c))
		} else {
			ws = append(ws, ipv6.NewPacketConn(c))
		}
	}
	msgs := make([]ipv4.Message, batch)
	start := time.Now()
	var deadline time.Time
	if cfg.Duration > 0 {
		deadline = start.Add(cfg.Duration)
	}
	res := Result{}
	next := 0
	for i := 0; ; i++ {
		if ctx.Err() != nil || (cfg.Count > 0 && res.Sent >= cfg.Count) {
			break
		}
		now := time.Now()
		if !deadline.IsZero() && !now.Before(deadline) {
			break
		}
		n := batch
		if cfg.Count > 0 {
			n = min(n, cfg.Count-res.Sent)
		}
		if cfg.Rate > 0 {
			// Pace: the batch that completes datagram res.Sent+n is due
			// at start + (res.Sent+n)/Rate.
			due := start.Add(time.Duration(float64(res.Sent) / cfg.Rate * float64(time.Second)))
			if d := due.Sub(now); d > 0 {
				time.Sleep(d)
			}
		}
		for j := range n {
			msgs[j].Buffers = [][]byte{cfg.Datagrams[next]}
			next = (next + 1) % len(cfg.Datagrams)
		}
		sent, err := ws[i%len(ws)].WriteBatch(msgs[:n], 0)
		res.Sent += sent
		if err != nil && !errors.Is(err, net.ErrClosed) {
			// ECONNREFUSED (no collector yet) and ENOBUFS are transient
			// on a connected UDP socket; count what was accepted.
			continue
		}
	}
	res.Elapsed = time.Since(start)
	return res, nil
}
