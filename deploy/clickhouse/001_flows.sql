-- Pseudonymized flows (flow.Pseudo), one row per flow. Column names and types
-- are those of docs/schema.md. Partitioned by day; ordered for lookups by
-- remote address and time. batch_id names the batch a row travelled in; the
-- sink also uses it as the insert_deduplication_token, and the deduplication
-- window below makes a retried insert of the same batch a no-op.
CREATE TABLE IF NOT EXISTS flows
(
    time_start       DateTime64(3, 'UTC'),
    time_end         DateTime64(3, 'UTC'),
    export_proto     LowCardinality(String),
    exporter         IPv6,
    obs_domain       UInt32,
    in_if            UInt32,
    out_if           UInt32,
    kind             LowCardinality(String),
    direction        LowCardinality(String),
    epoch            UInt32,
    sub              FixedString(16),
    sub_port         UInt16,
    peer             FixedString(16),
    peer_port        UInt16,
    remote_addr      IPv6,
    remote_port      UInt16,
    transit_src      IPv6,
    transit_src_port UInt16,
    proto            UInt8,
    tcp_flags        UInt8,
    bytes            UInt64,
    packets          UInt64,
    sampling_rate    UInt32,
    remote_asn       UInt32,
    remote_as_org    LowCardinality(String),
    remote_country   LowCardinality(String),
    remote_provider  LowCardinality(String),
    intel            String,
    exporter_name    LowCardinality(String),
    in_if_name       LowCardinality(String),
    out_if_name      LowCardinality(String),
    batch_id         FixedString(16),
    -- Pseudonym lookups ("what else did this subscriber reach?") and
    -- transit-source lookups skip most granules with a bloom filter.
    INDEX idx_sub sub TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_transit_src transit_src TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY toDate(time_start)
ORDER BY (remote_addr, time_start)
{{ttl "toDateTime(time_start)" .FlowsTTL}}
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 10000;
