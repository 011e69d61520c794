package bus

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the bus's Prometheus metrics. Producer, consumer, batcher and
// in-process bus share one set per Registerer; labels are bounded (reason).
type metrics struct {
	publishedFlows   prometheus.Counter
	batches          *prometheus.CounterVec
	producedMessages prometheus.Counter
	producedFlows    prometheus.Counter
	producedBytes    prometheus.Counter
	produceErrors    prometheus.Counter
	kafkaUp          prometheus.Gauge
	outages          prometheus.Counter
	bufferedBytes    prometheus.Gauge
	spooledMessages  prometheus.Counter
	drainedMessages  prometheus.Counter
	spoolBytes       prometheus.Gauge
	spoolMessages    prometheus.Gauge
	droppedFlows     *prometheus.CounterVec
	consumedMessages prometheus.Counter
	consumedFlows    prometheus.Counter
	committed        prometheus.Counter
	fetchErrors      prometheus.Counter
	badMessages      *prometheus.CounterVec
	deadLettered     prometheus.Counter
	queuedBatches    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	c := func(name, help string) prometheus.Counter {
		return register(reg, prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ccflow", Subsystem: "bus", Name: name, Help: help}))
	}
	g := func(name, help string) prometheus.Gauge {
		return register(reg, prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "ccflow", Subsystem: "bus", Name: name, Help: help}))
	}
	cv := func(name, help string, labels ...string) *prometheus.CounterVec {
		return register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "ccflow", Subsystem: "bus", Name: name, Help: help}, labels))
	}
	return &metrics{
		publishedFlows:   c("published_flows_total", "Flows handed to the bus by publishers."),
		batches:          cv("batches_total", "Batches published by batchers, by what closed them (size, time, flush).", "reason"),
		producedMessages: c("produced_messages_total", "Messages acknowledged by Kafka (directly or from the spool)."),
		producedFlows:    c("produced_flows_total", "Flows in messages acknowledged by Kafka."),
		producedBytes:    c("produced_bytes_total", "Value bytes of messages acknowledged by Kafka (the flows' wire size)."),
		produceErrors:    c("produce_errors_total", "Produce requests that failed after all attempts."),
		kafkaUp:          g("kafka_up", "1 while the producer's last produce request succeeded, 0 while Kafka is unreachable."),
		outages:          c("kafka_outages_total", "Times the producer found Kafka unreachable after it was reachable."),
		bufferedBytes:    g("buffered_bytes", "Encoded bytes in memory waiting for Kafka."),
		spooledMessages:  c("spooled_messages_total", "Messages written to the on-disk spool."),
		drainedMessages:  c("spool_drained_messages_total", "Spooled messages later acknowledged by Kafka."),
		spoolBytes:       g("spool_bytes", "Bytes in the on-disk spool."),
		spoolMessages:    g("spool_messages", "Messages in the on-disk spool (spool depth)."),
		droppedFlows:     cv("dropped_flows_total", "Flows dropped by the bus, by reason (spool_full, publish_error).", "reason"),
		consumedMessages: c("consumed_messages_total", "Messages (batches) delivered to detectors."),
		consumedFlows:    c("consumed_flows_total", "Flows delivered to detectors."),
		committed:        c("committed_messages_total", "Messages committed after a detector checkpoint."),
		fetchErrors:      c("fetch_errors_total", "Failed fetches (broker unreachable, rebalance); the consumer retries."),
		badMessages:      cv("bad_messages_total", "Messages a consumer could not read, by reason (corrupt, schema_version).", "reason"),
		deadLettered:     c("dead_lettered_messages_total", "Messages written to the dead-letter topic."),
		queuedBatches:    g("inproc_queued_batches", "Batches queued in the in-process bus."),
	}
}

// register registers c, or returns the collector already registered under
// the same description (several components may share a Registerer).
func register[T prometheus.Collector](reg prometheus.Registerer, c T) T {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(T); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}
