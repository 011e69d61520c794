-- Analyst rollup: traffic per remote endpoint (address, port, protocol) per
-- hour, kept up to date by a materialized view on flows. Only flows with a
-- subscriber side count (kind = 'subscriber'). subscribers is a uniq state
-- of (epoch, sub): read it with uniqMerge(subscribers). bytes_est and
-- packets_est scale the exported counts by the sampling rate.
CREATE TABLE IF NOT EXISTS remote_hourly
(
    hour           DateTime('UTC'),
    remote_addr    IPv6,
    remote_port    UInt16,
    proto          UInt8,
    flows          SimpleAggregateFunction(sum, UInt64),
    bytes          SimpleAggregateFunction(sum, UInt64),
    packets        SimpleAggregateFunction(sum, UInt64),
    bytes_est      SimpleAggregateFunction(sum, UInt64),
    packets_est    SimpleAggregateFunction(sum, UInt64),
    subscribers    AggregateFunction(uniq, UInt32, FixedString(16)),
    first_seen     SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_seen      SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    remote_asn     SimpleAggregateFunction(max, UInt32),
    remote_country SimpleAggregateFunction(max, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (remote_addr, remote_port, proto, hour)
{{ttl "hour" .FlowsTTL}}
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS remote_hourly_mv TO remote_hourly AS
SELECT
    toStartOfHour(f.time_start) AS hour,
    f.remote_addr AS remote_addr,
    f.remote_port AS remote_port,
    f.proto AS proto,
    toUInt64(count()) AS flows,
    sum(f.bytes) AS bytes,
    sum(f.packets) AS packets,
    sum(f.bytes * greatest(f.sampling_rate, 1)) AS bytes_est,
    sum(f.packets * greatest(f.sampling_rate, 1)) AS packets_est,
    uniqState(f.epoch, f.sub) AS subscribers,
    min(f.time_start) AS first_seen,
    max(f.time_end) AS last_seen,
    max(f.remote_asn) AS remote_asn,
    max(toString(f.remote_country)) AS remote_country
FROM flows AS f
WHERE f.kind = 'subscriber'
GROUP BY hour, remote_addr, remote_port, proto;
