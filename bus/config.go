// Package bus carries batches of pseudonymized flows from collectors to
// detectors, over Kafka or in process.
package bus

// Config configures the bus.
type Config struct {
	// Kind selects the bus implementation.
	Kind string `yaml:"kind" doc:"Bus implementation: inproc (one process) or kafka." enum:"inproc|kafka"`
	// Kafka configures the Kafka bus.
	Kafka KafkaConfig `yaml:"kafka" doc:"Kafka bus settings (bus.kind: kafka)."`
}

// KafkaConfig configures the Kafka bus.
type KafkaConfig struct {
	// Brokers are the bootstrap brokers.
	Brokers []string `yaml:"brokers" doc:"Bootstrap brokers (HOST:PORT)."`
	// Topic is the flow topic.
	Topic string `yaml:"topic" doc:"Topic carrying pseudonymized flow batches."`
	// Partitions is the partition count used when creating the topic.
	Partitions int `yaml:"partitions" doc:"Partitions when ccflow creates the topic."`
}

// DefaultConfig returns the default bus configuration.
func DefaultConfig() Config {
	return Config{Kind: "inproc", Kafka: KafkaConfig{Brokers: []string{"127.0.0.1:9092"}, Topic: "ccflow-flows-v1", Partitions: 8}}
}

// Validate checks the configuration.
func (c Config) Validate() error { return nil }
