// Command compare is the side-by-side benchmark of `make bench-compare`:
// ccflow's collector and goflow2 (v2.2.6, installed from the Go module
// proxy into bin/tools) receive the same NetFlow v9 load on loopback, one
// after the other, and it reports for each the highest drop-free rate and
// the CPU seconds per million flows, as a Markdown table
// (docs/bench-compare.md).
//
// The load is the traffic simulator's (`ccflow simulate`, 20,000
// subscribers) NetFlow v9 datagrams, recorded once with --pcap and replayed
// by bench/loadgen at rising rates from this process. The receivers run as
// separate processes so that their CPU time (utime+stime of
// /proc/PID/stat) is theirs alone:
//
//   - goflow2, file transport to /dev/null (-format bin: decode, its
//     protobuf producer, write);
//   - ccflow's collector stages without a bus: this program run again as a
//     receiver (-receiver) wires collector, privacy and the batcher of
//     `ccflow collect` to a producer that encodes each batch as the Kafka
//     producer would (Arrow IPC, zstd) and discards it;
//   - `ccflow collect` (the real binary) publishing to a real Kafka broker
//     (scripts/kafka.sh, started in a private state directory), and
//     goflow2 publishing to the same broker, unless -kafka none.
//
// A rate is drop-free when the kernel counted no drops on the receiver's
// socket (/proc/net/udp), the receiver counted no drops of its own, it
// processed every datagram sent (its own counter), and it kept up: at
// least 95% of them were processed by the time the sender finished.
//
// Production packages must not import this package (it is a command).
package main
