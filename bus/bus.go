// Package bus carries batches of pseudonymized flows from collectors to
// detectors, over Kafka or in process.
//
// Collectors hand flows to a Batcher, which groups them into flow.Batch
// values with unique IDs and publishes them to a Producer. Detectors Fetch
// Deliveries from a Consumer and Commit them once the state that includes
// their flows is checkpointed (at-least-once); a batch can therefore arrive
// twice, and Dedup drops repeats by batch ID.
//
// Two implementations exist: Inproc (one process, ccflow run) and Kafka
// (KafkaProducer in ccflow collect, KafkaConsumer in ccflow detect). On
// Kafka a batch is split by remote endpoint: every flow goes to partition
// murmur3(remote address) mod partitions (PartitionOf), one message per
// partition and batch, so one detector owns all flows of an endpoint. A
// message's value is the flow batch as an Arrow IPC stream (flow/flowarrow);
// its headers carry the schema version, batch ID and flow count. When Kafka
// does not accept messages the producer writes them to a bounded on-disk
// spool and drains it when Kafka is back; when the spool is full or
// disabled a configured policy blocks or drops, and counts. See
// docs/bus.md.
package bus

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/spaolacci/murmur3"

	"github.com/ccflow/ccflow/flow"
)

// Producer publishes batches of flows.
type Producer interface {
	// Publish hands b to the bus. It does not retain b.Flows after it
	// returns, so the caller may reuse the slice. It may block while the
	// bus is full (backpressure) and then returns ctx.Err() if ctx ends
	// first. Publish is safe for concurrent use.
	Publish(ctx context.Context, b flow.Batch) error
}

// Consumer delivers batches of flows to one detector.
type Consumer interface {
	// Fetch blocks until the next batch is available and returns it; it
	// returns ctx.Err() when ctx ends first, and ErrClosed once the
	// consumer is stopped (the in-process bus first delivers what is
	// queued). The caller owns the returned flows.
	Fetch(ctx context.Context) (Delivery, error)
	// Commit marks deliveries as processed: call it only after the state
	// that includes their flows is checkpointed. Deliveries not committed
	// are delivered again after a restart or rebalance (at-least-once).
	// Fetch and Commit may be called from different goroutines, but each
	// is called from one goroutine at a time.
	Commit(ctx context.Context, ds ...Delivery) error
}

// Delivery is one batch handed to a detector.
type Delivery struct {
	// Batch holds the flows and the batch ID (unique per message; see
	// Dedup).
	Batch flow.Batch
	// Partition is the Kafka partition the batch came from (0 in
	// process). All flows of one remote endpoint come from one partition.
	Partition int
	// Offset is the Kafka offset of the message (a sequence in process).
	Offset int64

	// msgs are the Kafka messages that Commit commits: this one and any
	// dead-lettered messages before it on the partition.
	msgs []kafka.Message
}

// Deps are the dependencies of the bus components.
type Deps struct {
	// Logger receives the bus's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the bus's metrics; nil registers on a private
	// registry.
	Registerer prometheus.Registerer
}

func (d Deps) logger(component string) *slog.Logger {
	l := d.Logger
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return l.With("stage", "bus", "component", component)
}

// Errors.
var (
	// ErrClosed is returned by operations on a stopped bus component.
	ErrClosed = errors.New("bus closed")
	// ErrNotStarted is returned by operations that need Start first.
	ErrNotStarted = errors.New("bus component not started")
)

// Kafka message headers.
const (
	// HeaderSchema holds the wire version of the message's Arrow stream
	// in decimal: 2 (flowarrow.WireVersion, the compact wire schema of the
	// zstd and none compressions) or 1 (flowarrow.WireVersionFlowSchema,
	// the flow schema as is, with Arrow buffer compression). Consumers
	// read both and dead-letter other versions.
	HeaderSchema = "ccflow-schema"
	// HeaderBatch holds the 16-byte batch ID of the message.
	HeaderBatch = "ccflow-batch"
	// HeaderFlows holds the number of flows in decimal.
	HeaderFlows = "ccflow-flows"
	// HeaderDeadReason names why a message was dead-lettered (corrupt,
	// schema_version, ...), on dead-letter messages only.
	HeaderDeadReason = "ccflow-dead-reason"
	// HeaderDeadError holds the error text, on dead-letter messages only.
	HeaderDeadError = "ccflow-dead-error"
	// HeaderDeadSource holds "topic/partition/offset" of the original
	// message, on dead-letter messages only.
	HeaderDeadSource = "ccflow-dead-source"
)

// PartitionKey returns the address that decides a flow's partition: the
// remote endpoint, or for subscriber-to-subscriber flows (no remote) the
// destination subscriber's pseudonym, so those spread too.
func PartitionKey(f *flow.Pseudo) [16]byte {
	if f.Kind == flow.KindBoth && f.Remote.IsZero() {
		return f.Peer
	}
	return f.Remote
}

// PartitionOf returns the partition (0..n-1) of a flow with partition key
// k: murmur3 (32-bit, seed 0) of the 16 bytes, modulo n. murmur3 is not a
// pseudonymization function; it only spreads keys (privacy invariant P2).
func PartitionOf(k [16]byte, n int) int {
	if n <= 1 {
		return 0
	}
	return int(murmur3.Sum32(k[:]) % uint32(n))
}

// NewBatchID returns the ID of sequence number seq of instance: the first 8
// bytes are the instance, the last 8 are seq<<16. The low 16 bits are left
// for PartID, which numbers the messages a producer splits a batch into.
func NewBatchID(instance [8]byte, seq uint64) flow.BatchID {
	var id flow.BatchID
	copy(id[:8], instance[:])
	binary.BigEndian.PutUint64(id[8:], seq<<16)
	return id
}

// PartID returns the ID of part n of batch id (id with its low 16 bits set
// to n). Part 0 of a batch keeps the batch's ID.
func PartID(id flow.BatchID, n uint16) flow.BatchID {
	binary.BigEndian.PutUint16(id[14:], n)
	return id
}
