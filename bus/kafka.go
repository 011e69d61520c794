package bus

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"golang.org/x/sync/semaphore"

	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/flow/flowarrow"
)

// KafkaProducer publishes flow batches to the Kafka topic of ccflow collect.
//
// Publish splits a batch by partition (PartitionOf), encodes each part as
// an Arrow IPC stream and queues the messages; one sender goroutine writes
// them with acks from all in-sync replicas, retrying with backoff. Messages
// that Kafka does not accept go to the on-disk spool, and while the spool
// holds messages new ones queue behind them there; a drain goroutine sends
// the spool in order when Kafka answers again. Memory is bounded by
// KafkaConfig.BufferBytes (Publish blocks above it). When the spool is full
// or disabled, SpoolConfig.Full decides: block (the sender retries and
// publishers wait) or drop (counted in ccflow_bus_dropped_flows_total).
type KafkaProducer struct {
	cfg  KafkaConfig
	log  *slog.Logger
	m    *metrics
	comp flowarrow.Compression
	encs sync.Pool // *flowarrow.Encoder

	w     *kafka.Writer
	sem   *semaphore.Weighted
	queue chan []kafka.Message
	spool *spool
	parts int

	mu      sync.Mutex
	up      bool
	ready   bool // topic checked or created
	stopped bool

	cancel  context.CancelFunc
	wg      sync.WaitGroup
	kick    chan struct{}
	stopErr error
	once    sync.Once
}

var _ Producer = (*KafkaProducer)(nil)

// NewKafkaProducer returns a producer for cfg. It does no I/O; Start
// connects.
func NewKafkaProducer(cfg KafkaConfig, deps Deps) (*KafkaProducer, error) {
	if err := cfg.Validate(true); err != nil {
		return nil, fmt.Errorf("kafka producer: %w", err)
	}
	comp, _ := flowarrow.ParseCompression(cfg.Compression)
	p := &KafkaProducer{
		cfg:   cfg,
		log:   deps.logger("kafka-producer").With("topic", cfg.Topic),
		m:     newMetrics(deps.Registerer),
		comp:  comp,
		sem:   semaphore.NewWeighted(cfg.BufferBytes),
		queue: make(chan []kafka.Message, 1024),
		parts: cfg.Partitions,
		kick:  make(chan struct{}, 1),
	}
	p.encs.New = func() any { return flowarrow.NewEncoder(comp) }
	return p, nil
}

// Start opens the spool, checks (or creates) the topic and starts the
// sender and drain goroutines. An unreachable broker is not an error: the
// producer spools until Kafka answers. The topic's partition count, when
// known, overrides KafkaConfig.Partitions, so that every producer of a
// topic partitions alike.
func (p *KafkaProducer) Start(ctx context.Context) error {
	if p.cfg.Spool.Dir != "" {
		s, err := openSpool(p.cfg.Spool.Dir, p.cfg.Spool.MaxBytes, p.cfg.Spool.SegmentBytes)
		if err != nil {
			return fmt.Errorf("kafka producer: %w", err)
		}
		p.spool = s
		n, b := s.Len()
		p.m.spoolMessages.Set(float64(n))
		p.m.spoolBytes.Set(float64(b))
		if n > 0 {
			p.log.Info("spool holds messages from an earlier run", "messages", n, "bytes", b)
		}
	}
	p.w = &kafka.Writer{
		Addr:            kafka.TCP(p.cfg.Brokers...),
		Topic:           p.cfg.Topic,
		Balancer:        keyBalancer{},
		MaxAttempts:     p.cfg.MaxAttempts,
		WriteBackoffMin: p.cfg.RetryBackoff,
		WriteBackoffMax: 10 * p.cfg.RetryBackoff,
		// kafka-go allocates (and zeroes) BatchSize messages for every
		// partition batch it builds: 1<<20 cost 168 MB per request and half
		// of the process's CPU. Messages here are tens to hundreds of kB,
		// so BatchBytes is what bounds a request; 256 is never reached.
		BatchSize:    256,
		BatchBytes:   int64(p.cfg.MaxMessageBytes),
		BatchTimeout: time.Millisecond,
		ReadTimeout:  p.cfg.WriteTimeout,
		WriteTimeout: p.cfg.WriteTimeout,
		RequiredAcks: kafka.RequireAll,
		Transport:    &kafka.Transport{DialTimeout: 3 * time.Second, IdleTimeout: time.Minute, MetadataTTL: 10 * time.Second},
	}
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := p.ensureTopic(tctx)
	cancel()
	if err != nil {
		p.log.Warn("kafka unreachable at start, spooling until it answers", "err", err)
		p.setUp(false)
	} else {
		p.setUp(true)
	}
	ctx, p.cancel = context.WithCancel(context.WithoutCancel(ctx))
	p.wg.Add(2)
	go p.sendLoop(ctx)
	go p.drainLoop(ctx)
	return nil
}

// ensureTopic creates the flow topic if configured and missing, and reads
// its partition count.
func (p *KafkaProducer) ensureTopic(ctx context.Context) error {
	n, err := ensureTopic(ctx, p.cfg, p.cfg.Topic, p.cfg.Partitions)
	if err != nil {
		return err
	}
	p.mu.Lock()
	if n != p.parts {
		p.log.Warn("topic partition count differs from configuration; using the topic's", "partitions", n, "configured", p.cfg.Partitions)
	}
	p.parts, p.ready = n, true
	p.mu.Unlock()
	return nil
}

// ensureTopic creates topic with partitions (if cfg.CreateTopics) when it
// does not exist, and returns its partition count.
func ensureTopic(ctx context.Context, cfg KafkaConfig, topic string, partitions int) (int, error) {
	c := &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Timeout: 10 * time.Second}
	meta, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, fmt.Errorf("read metadata of %s: %w", topic, err)
	}
	if len(meta.Topics) == 1 && meta.Topics[0].Error == nil && len(meta.Topics[0].Partitions) > 0 {
		return len(meta.Topics[0].Partitions), nil
	}
	if !cfg.CreateTopics {
		return 0, fmt.Errorf("topic %s does not exist (bus.kafka.create_topics is off)", topic)
	}
	res, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic:             topic,
		NumPartitions:     partitions,
		ReplicationFactor: cfg.Replication,
		ConfigEntries: []kafka.ConfigEntry{
			{ConfigName: "max.message.bytes", ConfigValue: strconv.Itoa(cfg.MaxMessageBytes)},
			{ConfigName: "min.insync.replicas", ConfigValue: strconv.Itoa(max(1, min(2, cfg.Replication-1)))},
		},
	}}})
	if err != nil {
		return 0, fmt.Errorf("create topic %s: %w", topic, err)
	}
	if err := res.Errors[topic]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return 0, fmt.Errorf("create topic %s: %w", topic, err)
	}
	// Wait until the metadata shows the new topic's leaders.
	for {
		meta, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		if err == nil && len(meta.Topics) == 1 && meta.Topics[0].Error == nil && len(meta.Topics[0].Partitions) > 0 {
			ok := true
			for _, pt := range meta.Topics[0].Partitions {
				if pt.Leader.Host == "" {
					ok = false
				}
			}
			if ok {
				return len(meta.Topics[0].Partitions), nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("wait for topic %s: %w", topic, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Publish splits b by partition, encodes the parts and queues them.
func (p *KafkaProducer) Publish(ctx context.Context, b flow.Batch) error {
	p.mu.Lock()
	stopped, parts := p.stopped, p.parts
	p.mu.Unlock()
	if stopped {
		return ErrClosed
	}
	if p.cancel == nil {
		return ErrNotStarted
	}
	if len(b.Flows) == 0 {
		return nil
	}
	msgs, size, err := p.encode(b, parts)
	if err != nil {
		return fmt.Errorf("encode batch %s: %w", b.ID, err)
	}
	if err := p.sem.Acquire(ctx, size); err != nil {
		return err
	}
	p.m.bufferedBytes.Add(float64(size))
	select {
	case p.queue <- msgs:
		p.m.publishedFlows.Add(float64(len(b.Flows)))
		return nil
	case <-ctx.Done():
		p.release(msgs)
		return ctx.Err()
	}
}

// encode splits b into one message per partition (more when a part has
// over MaxMessageFlows flows), in one pass over the flows.
func (p *KafkaProducer) encode(b flow.Batch, parts int) ([]kafka.Message, int64, error) {
	enc := p.encs.Get().(*flowarrow.Encoder)
	defer p.encs.Put(enc)
	var msgs []kafka.Message
	var size int64
	n := uint16(0)
	var id flow.BatchID
	wire := enc.WireVersion()
	err := enc.EncodeParts(b.Flows, parts,
		func(f *flow.Pseudo) int { return PartitionOf(PartitionKey(f), parts) },
		p.cfg.MaxMessageFlows,
		func() flow.BatchID { id = PartID(b.ID, n); n++; return id },
		func(part, flows int, payload []byte) error {
			// The value waits for Kafka's acknowledgement, counted by its
			// length in BufferBytes: give it exactly that (the payload
			// is the encoder's buffer, with room to spare).
			val := bytes.Clone(payload)
			msgs = append(msgs, newMessage(part, id, flows, val, wire))
			size += int64(len(val))
			return nil
		})
	if err != nil {
		return nil, 0, err
	}
	return msgs, size, nil
}

// wireHeaders holds the ccflow-schema header value of each wire version.
var wireHeaders = map[int][]byte{
	flowarrow.WireVersionFlowSchema: []byte(strconv.Itoa(flowarrow.WireVersionFlowSchema)),
	flowarrow.WireVersion:           []byte(strconv.Itoa(flowarrow.WireVersion)),
}

func newMessage(partition int, id flow.BatchID, flows int, val []byte, wire int) kafka.Message {
	key := make([]byte, 4)
	binary.BigEndian.PutUint32(key, uint32(partition))
	return kafka.Message{
		Key:   key,
		Value: val,
		Headers: []kafka.Header{
			{Key: HeaderSchema, Value: wireHeaders[wire]},
			{Key: HeaderBatch, Value: append([]byte(nil), id[:]...)},
			{Key: HeaderFlows, Value: []byte(strconv.Itoa(flows))},
		},
	}
}

// keyBalancer sends a message to the partition named by its 4-byte key.
type keyBalancer struct{}

func (keyBalancer) Balance(msg kafka.Message, partitions ...int) int {
	if len(msg.Key) != 4 || len(partitions) == 0 {
		return partitions[0]
	}
	k := int(binary.BigEndian.Uint32(msg.Key))
	return partitions[k%len(partitions)]
}

func messageFlows(m kafka.Message) int {
	for _, h := range m.Headers {
		if h.Key == HeaderFlows {
			n, _ := strconv.Atoi(string(h.Value))
			return n
		}
	}
	return 0
}

func (p *KafkaProducer) release(msgs []kafka.Message) {
	var size int64
	for _, m := range msgs {
		size += int64(len(m.Value))
	}
	p.sem.Release(size)
	p.m.bufferedBytes.Sub(float64(size))
}

func (p *KafkaProducer) setUp(up bool) {
	p.mu.Lock()
	was := p.up
	p.up = up
	p.mu.Unlock()
	if was && !up {
		p.m.outages.Inc()
	}
	if up {
		p.m.kafkaUp.Set(1)
	} else {
		p.m.kafkaUp.Set(0)
	}
}

func (p *KafkaProducer) isUp() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.up
}

// sendLoop writes queued messages to Kafka, or to the spool while Kafka is
// unreachable or the spool is not empty. It ends when the queue is closed
// (Stop), after handling everything queued.
func (p *KafkaProducer) sendLoop(ctx context.Context) {
	defer p.wg.Done()
	for msgs := range p.queue {
		// Take whatever else is queued, up to a few MB, for one request.
		size := 0
		for _, m := range msgs {
			size += len(m.Value)
		}
	more:
		for size < 4*p.cfg.MaxMessageBytes {
			select {
			case next, ok := <-p.queue:
				if !ok {
					break more
				}
				msgs = append(msgs, next...)
				for _, m := range next {
					size += len(m.Value)
				}
			default:
				break more
			}
		}
		p.deliver(ctx, msgs)
		p.release(msgs)
	}
}

// deliver sends msgs to Kafka or the spool, applying the full policy.
func (p *KafkaProducer) deliver(ctx context.Context, msgs []kafka.Message) {
	for {
		spooled := 0
		if p.spool != nil {
			spooled, _ = p.spool.Len()
		}
		if spooled == 0 && (p.isUp() || p.spool == nil) && p.probe(ctx) {
			failed := p.write(ctx, msgs)
			if len(failed) == 0 {
				return
			}
			msgs = failed
		}
		if p.spool != nil {
			n, err := p.spool.Append(msgs)
			if err != nil {
				p.log.Error("write to spool failed", "err", err)
			}
			if n > 0 {
				p.m.spooledMessages.Add(float64(n))
				p.updateSpoolGauges()
				p.kickDrain()
			}
			msgs = msgs[n:]
			if len(msgs) == 0 {
				return
			}
		}
		// The spool is full or disabled.
		if p.cfg.Spool.Full == FullDrop {
			flows := 0
			for _, m := range msgs {
				flows += messageFlows(m)
			}
			p.m.droppedFlows.WithLabelValues("spool_full").Add(float64(flows))
			p.log.Warn("kafka unreachable and spool full: dropped messages", "messages", len(msgs), "flows", flows)
			return
		}
		// Block: wait, then retry (publishers wait on the buffer).
		select {
		case <-time.After(p.cfg.Spool.RetryInterval):
		case <-ctx.Done():
			if ctx.Err() != nil && p.stopping() {
				flows := 0
				for _, m := range msgs {
					flows += messageFlows(m)
				}
				p.m.droppedFlows.WithLabelValues("spool_full").Add(float64(flows))
				p.log.Error("stopped while kafka unreachable and spool full: dropped messages", "messages", len(msgs), "flows", flows)
				return
			}
		}
	}
}

func (p *KafkaProducer) stopping() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopped
}

// write sends msgs and returns those Kafka did not accept.
func (p *KafkaProducer) write(ctx context.Context, msgs []kafka.Message) []kafka.Message {
	wctx := context.WithoutCancel(ctx) // a started request finishes during Stop
	err := p.w.WriteMessages(wctx, msgs...)
	if err == nil {
		p.accepted(msgs)
		p.setUp(true)
		return nil
	}
	p.m.produceErrors.Inc()
	var failed []kafka.Message
	var werrs kafka.WriteErrors
	if errors.As(err, &werrs) && len(werrs) == len(msgs) {
		var ok []kafka.Message
		for i, e := range werrs {
			if e != nil {
				failed = append(failed, msgs[i])
			} else {
				ok = append(ok, msgs[i])
			}
		}
		p.accepted(ok)
	} else {
		failed = msgs
	}
	if p.isUp() {
		p.log.Warn("kafka did not accept messages, spooling", "messages", len(failed), "err", err)
	}
	p.setUp(false)
	return failed
}

func (p *KafkaProducer) accepted(msgs []kafka.Message) {
	flows, bytes := 0, 0
	for _, m := range msgs {
		flows += messageFlows(m)
		bytes += len(m.Value)
	}
	p.m.producedMessages.Add(float64(len(msgs)))
	p.m.producedFlows.Add(float64(flows))
	p.m.producedBytes.Add(float64(bytes))
}

func (p *KafkaProducer) updateSpoolGauges() {
	n, b := p.spool.Len()
	p.m.spoolMessages.Set(float64(n))
	p.m.spoolBytes.Set(float64(b))
}

func (p *KafkaProducer) kickDrain() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// probe checks (or creates) the topic when that has not succeeded yet.
// Whether Kafka is up is decided by produce requests only.
func (p *KafkaProducer) probe(ctx context.Context) bool {
	p.mu.Lock()
	ready := p.ready
	p.mu.Unlock()
	if ready {
		return true
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return p.ensureTopic(pctx) == nil
}

// drainLoop sends the spool, oldest first, whenever it is not empty; its
// produce requests are also what finds Kafka back after an outage.
func (p *KafkaProducer) drainLoop(ctx context.Context) {
	defer p.wg.Done()
	if p.spool == nil {
		return
	}
	wait := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-p.kick:
			return true
		case <-time.After(d):
			return true
		}
	}
	for {
		if n, _ := p.spool.Len(); n == 0 {
			if !wait(time.Hour) {
				return
			}
			continue
		}
		if !p.probe(ctx) {
			if !wait(p.cfg.Spool.RetryInterval) {
				return
			}
			continue
		}
		msgs, err := p.spool.Peek(4096, 4*p.cfg.MaxMessageBytes)
		if err != nil {
			p.log.Error("read spool failed", "err", err)
			if !wait(p.cfg.Spool.RetryInterval) {
				return
			}
			continue
		}
		if len(msgs) == 0 {
			p.updateSpoolGauges()
			continue
		}
		// Send a fresh copy: kafka-go fills in fields of the messages.
		send := make([]kafka.Message, len(msgs))
		for i, m := range msgs {
			send[i] = kafka.Message{Key: m.Key, Value: m.Value, Headers: m.Headers}
		}
		if err := p.w.WriteMessages(context.WithoutCancel(ctx), send...); err != nil {
			p.m.produceErrors.Inc()
			p.setUp(false)
			// Wait, unless new spooled messages kick (they do not make
			// Kafka answer sooner).
			select {
			case <-ctx.Done():
				return
			case <-time.After(p.cfg.Spool.RetryInterval):
			}
			continue
		}
		p.setUp(true)
		p.accepted(send)
		p.m.drainedMessages.Add(float64(len(send)))
		if err := p.spool.Ack(len(msgs)); err != nil {
			p.log.Error("acknowledge spool failed", "err", err)
		}
		p.updateSpoolGauges()
		if n, _ := p.spool.Len(); n == 0 {
			p.log.Info("spool drained; kafka reachable")
		}
	}
}

// SpoolLen returns the messages and bytes in the spool (0 without one).
func (p *KafkaProducer) SpoolLen() (messages int, bytes int64) {
	if p.spool == nil {
		return 0, 0
	}
	return p.spool.Len()
}

// Stop sends (or spools) everything queued, waiting at most WriteTimeout
// for a blocked sender, stops the goroutines and closes the connection.
// What is still spooled stays on disk for the next start (WaitDrained
// first to empty it). It is idempotent.
func (p *KafkaProducer) Stop() error {
	p.once.Do(func() {
		p.mu.Lock()
		p.stopped = true
		p.mu.Unlock()
		if p.cancel == nil {
			return
		}
		close(p.queue)
		// Let the sender finish what is queued while Kafka is up; a blocked
		// sender gives up when the context ends.
		done := make(chan struct{})
		go func() { p.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(p.cfg.WriteTimeout):
		}
		p.cancel()
		<-done
		var errs []error
		if err := p.w.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close kafka writer: %w", err))
		}
		if p.spool != nil {
			if err := p.spool.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		p.stopErr = errors.Join(errs...)
	})
	return p.stopErr
}

// WaitDrained waits until nothing is queued or spooled, or ctx ends.
func (p *KafkaProducer) WaitDrained(ctx context.Context) error {
	for {
		n, _ := p.SpoolLen()
		if n == 0 && len(p.queue) == 0 && p.sem.TryAcquire(p.cfg.BufferBytes) {
			p.sem.Release(p.cfg.BufferBytes)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
