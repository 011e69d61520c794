package bus

import (
	"errors"
	"time"

	"github.com/ccflow/ccflow/config"
	"github.com/ccflow/ccflow/flow/flowarrow"
)

// Config configures the bus.
type Config struct {
	// Kind selects the bus implementation.
	Kind string `yaml:"kind" doc:"Bus implementation: inproc (one process) or kafka." enum:"inproc|kafka"`
	// Batch configures how collectors group flows into batches.
	Batch BatchConfig `yaml:"batch" doc:"How collector workers group flows into batches before publishing."`
	// Inproc configures the in-process bus.
	Inproc InprocConfig `yaml:"inproc" doc:"In-process bus settings (bus.kind: inproc)."`
	// Kafka configures the Kafka bus.
	Kafka KafkaConfig `yaml:"kafka" doc:"Kafka bus settings (bus.kind: kafka)."`
}

// Bus kinds.
const (
	KindInproc = "inproc"
	KindKafka  = "kafka"
)

// BatchConfig configures the Batcher.
type BatchConfig struct {
	// MaxFlows publishes a batch when it holds this many flows.
	MaxFlows int `yaml:"max_flows" doc:"Publish a batch when it holds this many flows."`
	// MaxDelay publishes a non-empty batch at the latest this long after
	// its first flow.
	MaxDelay time.Duration `yaml:"max_delay" doc:"Publish a non-empty batch at the latest this long after its first flow."`
}

// InprocConfig configures the in-process bus.
type InprocConfig struct {
	// Queue is the number of batches buffered between publishers and the
	// consumer; Publish blocks when it is full.
	Queue int `yaml:"queue" doc:"Batches buffered between collector and detector; publishing blocks when full."`
}

// KafkaConfig configures the Kafka bus.
type KafkaConfig struct {
	// Brokers are the bootstrap brokers.
	Brokers []string `yaml:"brokers" doc:"Bootstrap brokers (HOST:PORT)."`
	// Topic is the flow topic.
	Topic string `yaml:"topic" doc:"Topic carrying pseudonymized flow batches."`
	// Partitions is the partition count used when creating the topic.
	Partitions int `yaml:"partitions" doc:"Partitions when ccflow creates the topic."`
	// Replication is the replication factor used when creating topics.
	Replication int `yaml:"replication" doc:"Replication factor when ccflow creates the topics (3 in production clusters)."`
	// CreateTopics makes producers and consumers create the flow and
	// dead-letter topics when they are missing.
	CreateTopics bool `yaml:"create_topics" doc:"Create the flow and dead-letter topics when missing."`
	// DeadLetterTopic receives messages a consumer cannot read.
	DeadLetterTopic string `yaml:"dead_letter_topic" doc:"Topic receiving messages that consumers cannot read (corrupt Arrow, unknown schema version)."`
	// Group is the consumer group of ccflow detect.
	Group string `yaml:"group" doc:"Consumer group of the detectors."`
	// Compression is the compression of the Arrow payload.
	Compression string `yaml:"compression" doc:"Compression of the Arrow payload: zstd (IPC stream in a zstd frame), arrow-zstd or arrow-lz4 (Arrow IPC buffer compression), none." enum:"zstd|arrow-zstd|arrow-lz4|none"`
	// MaxMessageFlows caps the flows in one Kafka message.
	MaxMessageFlows int `yaml:"max_message_flows" doc:"Most flows in one Kafka message; a partition's share of a batch is split above it."`
	// MaxMessageBytes is the largest record batch the producer sends and
	// the max.message.bytes of topics it creates.
	MaxMessageBytes int `yaml:"max_message_bytes" doc:"Largest record batch sent to one partition, and max.message.bytes of created topics."`
	// BufferBytes bounds the encoded messages held in memory while waiting
	// for Kafka; Publish blocks when it is reached.
	BufferBytes int64 `yaml:"buffer_bytes" doc:"Encoded bytes held in memory waiting for Kafka; publishing blocks when reached."`
	// WriteTimeout bounds one produce request.
	WriteTimeout time.Duration `yaml:"write_timeout" doc:"Timeout of one produce request."`
	// MaxAttempts is how often a produce request is tried before the
	// messages go to the spool.
	MaxAttempts int `yaml:"max_attempts" doc:"Attempts of a produce request before its messages go to the spool."`
	// RetryBackoff is the first backoff between attempts (it doubles up to
	// ten times this).
	RetryBackoff time.Duration `yaml:"retry_backoff" doc:"First backoff between produce attempts; doubles up to ten times this."`
	// FetchMaxWait bounds how long a consumer's fetch waits for data.
	FetchMaxWait time.Duration `yaml:"fetch_max_wait" doc:"Longest a consumer fetch request waits for new messages."`
	// FetchMaxBytes bounds one fetch response.
	FetchMaxBytes int `yaml:"fetch_max_bytes" doc:"Largest fetch response per partition."`
	// DecodeMaxBytes bounds the memory one message may decode into.
	DecodeMaxBytes int64 `yaml:"decode_max_bytes" doc:"Most Arrow memory one message may decode into; larger messages are dead-lettered."`
	// Spool configures the on-disk spool used while Kafka is unreachable.
	Spool SpoolConfig `yaml:"spool" doc:"On-disk spool for messages Kafka does not accept (broker unreachable)."`
}

// SpoolConfig configures the producer's on-disk spool.
type SpoolConfig struct {
	// Dir is the spool directory; empty disables the spool.
	Dir string `yaml:"dir" doc:"Spool directory (one per producer process); empty disables the spool."`
	// MaxBytes bounds the spool's size on disk.
	MaxBytes int64 `yaml:"max_bytes" doc:"Largest size of the spool on disk."`
	// SegmentBytes is the size at which a spool file is closed.
	SegmentBytes int64 `yaml:"segment_bytes" doc:"Size at which a spool file is closed and a new one started."`
	// Full says what happens to messages that Kafka does not accept when
	// the spool is full or disabled.
	Full string `yaml:"full" doc:"When the spool is full or disabled: block (publishers wait; collectors drop at their sockets) or drop (count in ccflow_bus_dropped_flows_total)." enum:"block|drop"`
	// RetryInterval is how often the spool retries Kafka while it is
	// unreachable.
	RetryInterval time.Duration `yaml:"retry_interval" doc:"How often the spool retries Kafka while it is unreachable."`
}

// Spool full policies.
const (
	FullBlock = "block"
	FullDrop  = "drop"
)

// DefaultConfig returns the default bus configuration.
func DefaultConfig() Config {
	return Config{
		Kind:   KindInproc,
		Batch:  BatchConfig{MaxFlows: 65536, MaxDelay: time.Second},
		Inproc: InprocConfig{Queue: 16},
		Kafka: KafkaConfig{
			Brokers:         []string{"127.0.0.1:9092"},
			Topic:           "ccflow-flows-v1",
			Partitions:      8,
			Replication:     1,
			CreateTopics:    true,
			DeadLetterTopic: "ccflow-flows-v1-dead",
			Group:           "ccflow-detect",
			Compression:     "zstd",
			MaxMessageFlows: 32768,
			MaxMessageBytes: 8 << 20,
			BufferBytes:     64 << 20,
			WriteTimeout:    10 * time.Second,
			MaxAttempts:     3,
			RetryBackoff:    100 * time.Millisecond,
			FetchMaxWait:    500 * time.Millisecond,
			FetchMaxBytes:   16 << 20,
			DecodeMaxBytes:  256 << 20,
			Spool: SpoolConfig{
				Dir:           "ccflow-data/spool",
				MaxBytes:      1 << 30,
				SegmentBytes:  16 << 20,
				Full:          FullBlock,
				RetryInterval: time.Second,
			},
		},
	}
}

// Validate checks the configuration; keys in errors are relative to it.
func (c Config) Validate() error {
	var errs []error
	if c.Batch.MaxFlows < 1 {
		errs = append(errs, config.Errorf("batch.max_flows", "must be at least 1"))
	}
	if c.Batch.MaxDelay <= 0 {
		errs = append(errs, config.Errorf("batch.max_delay", "must be positive"))
	}
	if c.Inproc.Queue < 1 {
		errs = append(errs, config.Errorf("inproc.queue", "must be at least 1"))
	}
	errs = append(errs, config.Prefix("kafka", c.Kafka.Validate(c.Kind == KindKafka)))
	return errors.Join(errs...)
}

// Validate checks the Kafka configuration; keys in errors are relative to
// it. Brokers and topics must be set only when the Kafka bus is used.
func (k KafkaConfig) Validate(used bool) error {
	var errs []error
	if used && len(k.Brokers) == 0 {
		errs = append(errs, config.Errorf("brokers", "must name at least one broker when bus.kind is kafka"))
	}
	if used && k.Topic == "" {
		errs = append(errs, config.Errorf("topic", "must be set when bus.kind is kafka"))
	}
	if used && k.DeadLetterTopic == "" {
		errs = append(errs, config.Errorf("dead_letter_topic", "must be set when bus.kind is kafka"))
	}
	if k.DeadLetterTopic != "" && k.DeadLetterTopic == k.Topic {
		errs = append(errs, config.Errorf("dead_letter_topic", "must differ from topic"))
	}
	if k.Partitions < 1 || k.Partitions > 4096 {
		errs = append(errs, config.Errorf("partitions", "must be between 1 and 4096"))
	}
	if k.Replication < 1 {
		errs = append(errs, config.Errorf("replication", "must be at least 1"))
	}
	if _, err := flowarrow.ParseCompression(k.Compression); err != nil {
		errs = append(errs, config.Errorf("compression", "%v", err))
	}
	if k.MaxMessageFlows < 1 || k.MaxMessageFlows > 1<<20 {
		errs = append(errs, config.Errorf("max_message_flows", "must be between 1 and 1048576"))
	}
	if k.MaxMessageBytes < 1<<20 {
		errs = append(errs, config.Errorf("max_message_bytes", "must be at least 1 MiB"))
	}
	if k.BufferBytes < int64(k.MaxMessageBytes) {
		errs = append(errs, config.Errorf("buffer_bytes", "must be at least max_message_bytes"))
	}
	if k.WriteTimeout <= 0 {
		errs = append(errs, config.Errorf("write_timeout", "must be positive"))
	}
	if k.MaxAttempts < 1 {
		errs = append(errs, config.Errorf("max_attempts", "must be at least 1"))
	}
	if k.RetryBackoff <= 0 {
		errs = append(errs, config.Errorf("retry_backoff", "must be positive"))
	}
	if k.FetchMaxWait <= 0 {
		errs = append(errs, config.Errorf("fetch_max_wait", "must be positive"))
	}
	if k.FetchMaxBytes < k.MaxMessageBytes {
		errs = append(errs, config.Errorf("fetch_max_bytes", "must be at least max_message_bytes"))
	}
	if k.DecodeMaxBytes < 1<<20 {
		errs = append(errs, config.Errorf("decode_max_bytes", "must be at least 1 MiB"))
	}
	if k.Spool.Dir != "" {
		if k.Spool.SegmentBytes < int64(k.MaxMessageBytes) {
			errs = append(errs, config.Errorf("spool.segment_bytes", "must be at least max_message_bytes"))
		}
		if k.Spool.MaxBytes < k.Spool.SegmentBytes {
			errs = append(errs, config.Errorf("spool.max_bytes", "must be at least spool.segment_bytes"))
		}
	}
	if k.Spool.RetryInterval <= 0 {
		errs = append(errs, config.Errorf("spool.retry_interval", "must be positive"))
	}
	return errors.Join(errs...)
}
