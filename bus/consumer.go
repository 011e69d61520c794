package bus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ccflow/ccflow/flow/flowarrow"
)

// KafkaConsumer is the Consumer of ccflow detect: a member of the consumer
// group KafkaConfig.Group on the flow topic. Kafka assigns it whole
// partitions, so it sees every flow of the remote endpoints that hash to
// them.
//
// Offsets are committed only by Commit, which the detector calls after it
// has checkpointed the state that includes the deliveries' flows, so a
// crash or rebalance redelivers what was not checkpointed (at-least-once);
// Dedup drops the repeats by batch ID. A message that cannot be read (a
// corrupt Arrow payload, an unknown schema version) is counted in
// ccflow_bus_bad_messages_total, logged (rate-limited) and written to the
// dead-letter topic; its offset is committed with the next delivery of its
// partition, and Fetch goes on with the next message.
type KafkaConsumer struct {
	cfg KafkaConfig
	log *slog.Logger
	m   *metrics
	dec *flowarrow.Decoder

	r   *kafka.Reader
	dlq *kafka.Writer

	// pending holds dead-lettered messages per partition, committed with
	// the partition's next delivery. Only Fetch touches it.
	pending map[int][]kafka.Message
	limit   logLimiter

	once    sync.Once
	stopErr error
}

var _ Consumer = (*KafkaConsumer)(nil)

// NewKafkaConsumer returns a consumer for cfg. It does no I/O; Start
// connects.
func NewKafkaConsumer(cfg KafkaConfig, deps Deps) (*KafkaConsumer, error) {
	if err := cfg.Validate(true); err != nil {
		return nil, fmt.Errorf("kafka consumer: %w", err)
	}
	if cfg.Group == "" {
		return nil, errors.New("kafka consumer: bus.kafka.group must be set")
	}
	return &KafkaConsumer{
		cfg:     cfg,
		log:     deps.logger("kafka-consumer").With("topic", cfg.Topic, "group", cfg.Group),
		m:       newMetrics(deps.Registerer),
		dec:     flowarrow.NewDecoder(cfg.DecodeMaxBytes),
		pending: map[int][]kafka.Message{},
		limit:   logLimiter{every: time.Second},
	}, nil
}

// Start checks (or creates) the flow and dead-letter topics and joins the
// consumer group. The broker must answer.
func (c *KafkaConsumer) Start(ctx context.Context) error {
	if _, err := ensureTopic(ctx, c.cfg, c.cfg.Topic, c.cfg.Partitions); err != nil {
		return fmt.Errorf("kafka consumer: %w", err)
	}
	if _, err := ensureTopic(ctx, c.cfg, c.cfg.DeadLetterTopic, 1); err != nil {
		return fmt.Errorf("kafka consumer: %w", err)
	}
	c.r = kafka.NewReader(kafka.ReaderConfig{
		Brokers:                c.cfg.Brokers,
		GroupID:                c.cfg.Group,
		Topic:                  c.cfg.Topic,
		MinBytes:               1,
		MaxBytes:               c.cfg.FetchMaxBytes,
		MaxWait:                c.cfg.FetchMaxWait,
		QueueCapacity:          64,
		CommitInterval:         0, // synchronous commits, only from Commit
		StartOffset:            kafka.FirstOffset,
		HeartbeatInterval:      time.Second,
		SessionTimeout:         10 * time.Second,
		RebalanceTimeout:       10 * time.Second,
		JoinGroupBackoff:       500 * time.Millisecond,
		ReadBackoffMin:         100 * time.Millisecond,
		ReadBackoffMax:         time.Second,
		WatchPartitionChanges:  true,
		PartitionWatchInterval: 10 * time.Second,
		MaxAttempts:            c.cfg.MaxAttempts,
	})
	c.dlq = &kafka.Writer{
		Addr:            kafka.TCP(c.cfg.Brokers...),
		Topic:           c.cfg.DeadLetterTopic,
		Balancer:        keyBalancer{},
		MaxAttempts:     c.cfg.MaxAttempts,
		WriteBackoffMin: c.cfg.RetryBackoff,
		WriteBackoffMax: 10 * c.cfg.RetryBackoff,
		BatchTimeout:    time.Millisecond,
		BatchBytes:      int64(c.cfg.MaxMessageBytes),
		WriteTimeout:    c.cfg.WriteTimeout,
		RequiredAcks:    kafka.RequireAll,
	}
	return nil
}

// Fetch returns the next readable batch of the partitions assigned to this
// consumer.
func (c *KafkaConsumer) Fetch(ctx context.Context) (Delivery, error) {
	if c.r == nil {
		return Delivery{}, ErrNotStarted
	}
	for {
		m, err := c.r.FetchMessage(ctx)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return Delivery{}, ErrClosed
			}
			if ctx.Err() != nil {
				return Delivery{}, ctx.Err()
			}
			// The broker is unreachable or the group is rebalancing: the
			// reader reconnects; keep going.
			c.m.fetchErrors.Inc()
			if c.limit.allow() {
				c.log.Warn("fetch failed, retrying", "err", err)
			}
			select {
			case <-ctx.Done():
				return Delivery{}, ctx.Err()
			case <-time.After(c.cfg.Spool.RetryInterval):
			}
			continue
		}
		d, reason, err := c.decode(m)
		if err == nil {
			d.msgs = append(c.pending[m.Partition], m)
			delete(c.pending, m.Partition)
			c.m.consumedMessages.Inc()
			c.m.consumedFlows.Add(float64(len(d.Batch.Flows)))
			return d, nil
		}
		c.m.badMessages.WithLabelValues(reason).Inc()
		if c.limit.allow() {
			c.log.Warn("unreadable message sent to the dead-letter topic", "reason", reason, "partition", m.Partition, "offset", m.Offset, "err", err)
		}
		if err := c.deadLetter(ctx, m, reason, err); err != nil {
			return Delivery{}, err
		}
		c.pending[m.Partition] = append(c.pending[m.Partition], m)
	}
}

// decode turns m into a Delivery; on failure it returns the reason label.
func (c *KafkaConsumer) decode(m kafka.Message) (Delivery, string, error) {
	version := ""
	for _, h := range m.Headers {
		if h.Key == HeaderSchema {
			version = string(h.Value)
		}
	}
	if version != strconv.Itoa(flowarrow.WireVersion) && version != strconv.Itoa(flowarrow.WireVersionFlowSchema) {
		return Delivery{}, "schema_version", fmt.Errorf("schema version %q, want %d or %d", version, flowarrow.WireVersion, flowarrow.WireVersionFlowSchema)
	}
	flows, id, err := c.dec.Decode(nil, m.Value)
	if err != nil {
		return Delivery{}, "corrupt", err
	}
	d := Delivery{Partition: m.Partition, Offset: m.Offset}
	d.Batch.ID, d.Batch.Flows = id, flows
	return d, "", nil
}

// deadLetter writes m with the reason to the dead-letter topic, retrying
// until it succeeds or ctx ends: an unreadable message is never skipped
// without a copy.
func (c *KafkaConsumer) deadLetter(ctx context.Context, m kafka.Message, reason string, cause error) error {
	hs := append([]kafka.Header(nil), m.Headers...)
	hs = append(hs,
		kafka.Header{Key: HeaderDeadReason, Value: []byte(reason)},
		kafka.Header{Key: HeaderDeadError, Value: []byte(cause.Error())},
		kafka.Header{Key: HeaderDeadSource, Value: []byte(fmt.Sprintf("%s/%d/%d", m.Topic, m.Partition, m.Offset))},
	)
	for {
		err := c.dlq.WriteMessages(ctx, kafka.Message{Key: m.Key, Value: m.Value, Headers: hs})
		if err == nil {
			c.m.deadLettered.Inc()
			return nil
		}
		c.log.Error("write to dead-letter topic failed, retrying", "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("dead-letter message: %w", err)
		case <-time.After(c.cfg.Spool.RetryInterval):
		}
	}
}

// Commit commits the offsets of ds (and of the dead-lettered messages
// before them).
func (c *KafkaConsumer) Commit(ctx context.Context, ds ...Delivery) error {
	if c.r == nil {
		return ErrNotStarted
	}
	var msgs []kafka.Message
	for _, d := range ds {
		msgs = append(msgs, d.msgs...)
	}
	if len(msgs) == 0 {
		return nil
	}
	if err := c.r.CommitMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("commit offsets: %w", err)
	}
	c.m.committed.Add(float64(len(ds)))
	return nil
}

// Stop leaves the consumer group and closes the connections; uncommitted
// deliveries are redelivered to the group. It is idempotent.
func (c *KafkaConsumer) Stop() error {
	c.once.Do(func() {
		var errs []error
		if c.r != nil {
			if err := c.r.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close kafka reader: %w", err))
			}
		}
		if c.dlq != nil {
			if err := c.dlq.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close dead-letter writer: %w", err))
			}
		}
		c.stopErr = errors.Join(errs...)
	})
	return c.stopErr
}

// logLimiter allows one log line per interval.
type logLimiter struct {
	every time.Duration
	last  time.Time
}

func (l *logLimiter) allow() bool {
	now := time.Now()
	if now.Sub(l.last) < l.every {
		return false
	}
	l.last = now
	return true
}
