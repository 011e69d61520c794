// Package loopback holds the collector's loopback benchmark
// (BenchmarkLoopback): an in-process collector on 127.0.0.1 receives real
// softflowd NetFlow v9 datagrams replayed by bench/loadgen from a second
// process at rising rates, and the benchmark reports the highest rate at
// which every datagram was received and decoded. It has no non-test code.
package loopback
