-- Pair-level beacon scores (flow.PairScore), one row per (subscriber
-- pseudonym, remote endpoint) pair per detection window, for analyst
-- drill-down. Pseudonyms only: never an address of a subscriber.
CREATE TABLE IF NOT EXISTS beacon_pairs
(
    window_start  DateTime64(3, 'UTC'),
    window_end    DateTime64(3, 'UTC'),
    epoch         UInt32,
    sub           FixedString(16),
    remote_addr   IPv6,
    remote_port   UInt16,
    proto         UInt8,
    score         Float64,
    c_beacon      Float64,
    c_skew        Float64,
    c_madm        Float64,
    c_size        Float64,
    c_count       Float64,
    c_coverage    Float64,
    c_period      Float64,
    c_fan_in      Float64,
    c_popularity  Float64,
    c_intel       Float64,
    c_provider    Float64,
    period_s      Float64,
    jitter_s      Float64,
    flows         Int64,
    bytes         UInt64,
    first_seen    DateTime64(3, 'UTC'),
    last_seen     DateTime64(3, 'UTC'),
    sampling_rate UInt32,
    model_version LowCardinality(String),
    INDEX idx_sub sub TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (remote_addr, remote_port, proto, window_start, sub)
{{ttl "toDateTime(window_start)" .PairsTTL}}
SETTINGS non_replicated_deduplication_window = 10000;
