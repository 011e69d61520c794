// Package sim is ccflow's traffic simulator: a synthetic ISP whose routers
// export NetFlow v9, IPFIX and sFlow v5 datagrams, used by `ccflow simulate`,
// `make demo` and the side-by-side benchmark.
//
// The simulated ISP has subscribers (addresses from documentation, private
// and shared ranges only, never real people's), background traffic to popular
// services with heavy-tailed, bursty timing, benign periodic software (NTP,
// hourly update checks) and botnets whose infected subscribers beacon to a
// command-and-control (C&C) server with a period, jitter and missed beats. The
// botnets are the ground truth that `ccflow eval` scores candidates against
// (WriteTruth); the benign periodic services are what a detector must not
// report (WriteBenign).
//
// The model runs in event time, one second per step (Next), and is fully
// determined by Config (including Config.Seed): the same configuration gives
// the same records and truth, whatever the wall-clock pacing. Run puts the
// records on the wire through Exporters (an encoder and a writer each),
// paced by Pacing: a speed (X event seconds per wall second), or a target
// datagram or flow rate.
//
// The encoders (NetFlow9Encoder, IPFIXEncoder, SFlowEncoder) turn Records
// into datagrams and can be used on their own, for example by benchmarks that
// need datagrams in memory. They reuse caller-owned buffers and allocate
// nothing per record or per datagram.
//
// Package sim is part of the benchmark harness (bench/): production packages
// must not import it; only the binary does, for `ccflow simulate`.
package sim
