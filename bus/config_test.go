package bus

import (
	"strings"
	"testing"
	"time"
)

func TestDefaultConfigValidates(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("default configuration does not validate: %v", err)
	}
	c.Kind = KindKafka
	if err := c.Validate(); err != nil {
		t.Fatalf("default configuration with bus.kind kafka does not validate: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		key    string
	}{
		{"no brokers", func(c *Config) { c.Kind = KindKafka; c.Kafka.Brokers = nil }, "kafka.brokers"},
		{"brokers unused with inproc", func(c *Config) { c.Kafka.Brokers = nil }, ""},
		{"same dead-letter topic", func(c *Config) { c.Kafka.DeadLetterTopic = c.Kafka.Topic }, "kafka.dead_letter_topic"},
		{"zero partitions", func(c *Config) { c.Kafka.Partitions = 0 }, "kafka.partitions"},
		{"bad compression", func(c *Config) { c.Kafka.Compression = "gzip" }, "kafka.compression"},
		{"small buffer", func(c *Config) { c.Kafka.BufferBytes = 1 }, "kafka.buffer_bytes"},
		{"zero batch", func(c *Config) { c.Batch.MaxFlows = 0 }, "batch.max_flows"},
		{"zero delay", func(c *Config) { c.Batch.MaxDelay = 0 }, "batch.max_delay"},
		{"tiny spool", func(c *Config) { c.Kafka.Spool.MaxBytes = 1 }, "kafka.spool.max_bytes"},
		{"no spool is fine", func(c *Config) { c.Kafka.Spool.Dir = ""; c.Kafka.Spool.MaxBytes = 0 }, ""},
		{"zero retry", func(c *Config) { c.Kafka.Spool.RetryInterval = 0 * time.Second }, "kafka.spool.retry_interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.change(&c)
			err := c.Validate()
			if tt.key == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.key+":") {
				t.Fatalf("error = %v, want one naming %s", err, tt.key)
			}
		})
	}
}
