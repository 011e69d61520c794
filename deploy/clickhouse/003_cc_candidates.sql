-- C&C candidates (flow.Candidate), one row per candidate endpoint per
-- detection window, with its score components (c_*), evidence counts and the
-- explanation in words. Counts of subscribers, never their identities.
CREATE TABLE IF NOT EXISTS cc_candidates
(
    remote_addr           IPv6,
    remote_port           UInt16,
    proto                 UInt8,
    window_start          DateTime64(3, 'UTC'),
    window_end            DateTime64(3, 'UTC'),
    score                 Float64,
    c_beacon              Float64,
    c_skew                Float64,
    c_madm                Float64,
    c_size                Float64,
    c_count               Float64,
    c_coverage            Float64,
    c_period              Float64,
    c_fan_in              Float64,
    c_popularity          Float64,
    c_intel               Float64,
    c_provider            Float64,
    period_s              Float64,
    jitter_s              Float64,
    subscribers           UInt32,
    beaconing_subscribers UInt32,
    flows                 Int64,
    bytes                 UInt64,
    sampling_rate         UInt32,
    first_seen            DateTime64(3, 'UTC'),
    last_seen             DateTime64(3, 'UTC'),
    suppressed            LowCardinality(String),
    explanation           String,
    asn                   UInt32,
    as_org                LowCardinality(String),
    country               LowCardinality(String),
    intel                 Array(LowCardinality(String)),
    model_version         LowCardinality(String),
    -- "Today's top candidates" reads one partition and skips low scores.
    INDEX idx_score score TYPE minmax GRANULARITY 1
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (remote_addr, remote_port, proto, window_start)
SETTINGS non_replicated_deduplication_window = 10000;
