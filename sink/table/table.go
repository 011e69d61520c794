// Package table names the tables of ccflow's sinks and their columns: one
// list shared by the ClickHouse schema (deploy/clickhouse), the ClickHouse
// sink's inserts and the Parquet sink's files, so the names and the order
// cannot drift apart (a test compares them with what a real ClickHouse
// engine creates from the migrations). It depends only on flow.
package table

import (
	"net/netip"

	"github.com/ccflow/ccflow/flow"
)

// Column is one column of a table.
type Column struct {
	// Name and Type are the column's name and ClickHouse type, exactly as
	// in deploy/clickhouse (a test compares them with the tables a real
	// engine creates from the migrations).
	Name string
	Type string
}

// Table names.
const (
	Flows      = "flows"
	Pairs      = "beacon_pairs"
	Candidates = "cc_candidates"
)

const dt64 = "DateTime64(3, 'UTC')"

var componentColumns = []Column{
	{"c_beacon", "Float64"}, {"c_skew", "Float64"}, {"c_madm", "Float64"}, {"c_size", "Float64"},
	{"c_count", "Float64"}, {"c_coverage", "Float64"}, {"c_period", "Float64"}, {"c_fan_in", "Float64"},
	{"c_popularity", "Float64"}, {"c_intel", "Float64"}, {"c_provider", "Float64"},
}

// FlowColumns are the columns of flows, in insert order (docs/schema.md).
var FlowColumns = []Column{
	{"time_start", dt64}, {"time_end", dt64}, {"export_proto", "LowCardinality(String)"},
	{"exporter", "IPv6"}, {"obs_domain", "UInt32"}, {"in_if", "UInt32"}, {"out_if", "UInt32"},
	{"kind", "LowCardinality(String)"}, {"direction", "LowCardinality(String)"}, {"epoch", "UInt32"},
	{"sub", "FixedString(16)"}, {"sub_port", "UInt16"}, {"peer", "FixedString(16)"}, {"peer_port", "UInt16"},
	{"remote_addr", "IPv6"}, {"remote_port", "UInt16"}, {"transit_src", "IPv6"}, {"transit_src_port", "UInt16"},
	{"proto", "UInt8"}, {"tcp_flags", "UInt8"}, {"bytes", "UInt64"}, {"packets", "UInt64"},
	{"sampling_rate", "UInt32"}, {"remote_asn", "UInt32"}, {"remote_as_org", "LowCardinality(String)"},
	{"remote_country", "LowCardinality(String)"}, {"remote_provider", "LowCardinality(String)"},
	{"intel", "String"}, {"exporter_name", "LowCardinality(String)"}, {"in_if_name", "LowCardinality(String)"},
	{"out_if_name", "LowCardinality(String)"}, {"batch_id", "FixedString(16)"},
}

// PairColumns are the columns of beacon_pairs, in insert order.
var PairColumns = concat([]Column{
	{"window_start", dt64}, {"window_end", dt64}, {"epoch", "UInt32"}, {"sub", "FixedString(16)"},
	{"remote_addr", "IPv6"}, {"remote_port", "UInt16"}, {"proto", "UInt8"}, {"score", "Float64"},
}, componentColumns, []Column{
	{"period_s", "Float64"}, {"jitter_s", "Float64"}, {"flows", "Int64"}, {"bytes", "UInt64"},
	{"first_seen", dt64}, {"last_seen", dt64}, {"sampling_rate", "UInt32"}, {"model_version", "LowCardinality(String)"},
	{"evidence", "LowCardinality(String)"}, // 005_beacon_pairs_evidence
})

// CandidateColumns are the columns of cc_candidates, in insert order.
var CandidateColumns = concat([]Column{
	{"remote_addr", "IPv6"}, {"remote_port", "UInt16"}, {"proto", "UInt8"},
	{"window_start", dt64}, {"window_end", dt64}, {"score", "Float64"},
}, componentColumns, []Column{
	{"period_s", "Float64"}, {"jitter_s", "Float64"}, {"subscribers", "UInt32"}, {"beaconing_subscribers", "UInt32"},
	{"flows", "Int64"}, {"bytes", "UInt64"}, {"sampling_rate", "UInt32"}, {"first_seen", dt64}, {"last_seen", dt64},
	{"suppressed", "LowCardinality(String)"}, {"explanation", "String"}, {"asn", "UInt32"},
	{"as_org", "LowCardinality(String)"}, {"country", "LowCardinality(String)"},
	{"intel", "Array(LowCardinality(String))"}, {"model_version", "LowCardinality(String)"},
})

// Columns maps each table to its columns.
var Columns = map[string][]Column{Flows: FlowColumns, Pairs: PairColumns, Candidates: CandidateColumns}

func concat(parts ...[]Column) []Column {
	var out []Column
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// IP returns a in the 16-byte form the IPv6 columns store (IPv4-mapped for
// IPv4); the invalid (absent) address becomes ::.
func IP(a netip.Addr) netip.Addr {
	if !a.IsValid() {
		return netip.IPv6Unspecified()
	}
	return netip.AddrFrom16(a.As16())
}

func components(c flow.Components) []any {
	return []any{c.Beacon, c.Skew, c.MADM, c.Size, c.Count, c.Coverage, c.Period, c.FanIn, c.Popularity, c.Intel, c.Provider}
}

// PairValues returns the values of one beacon_pairs row, in PairColumns order.
func PairValues(p *flow.PairScore) []any {
	v := []any{p.WindowStart.UTC(), p.WindowEnd.UTC(), p.Epoch, p.Sub[:], IP(p.RemoteAddr), p.RemotePort, uint8(p.Proto), p.Score}
	v = append(v, components(p.Components)...)
	return append(v, p.PeriodS, p.JitterS, p.Flows, p.Bytes, p.FirstSeen.UTC(), p.LastSeen.UTC(), p.SamplingRate, p.ModelVersion, p.Evidence)
}

// CandidateValues returns the values of one cc_candidates row, in
// CandidateColumns order (see PairValues for the Go types).
func CandidateValues(c *flow.Candidate) []any {
	v := []any{IP(c.RemoteAddr), c.RemotePort, uint8(c.Proto), c.WindowStart.UTC(), c.WindowEnd.UTC(), c.Score}
	v = append(v, components(c.Components)...)
	intel := c.Intel
	if intel == nil {
		intel = []string{}
	}
	return append(v, c.PeriodS, c.JitterS, clampU32(c.Subscribers), clampU32(c.BeaconingSubscribers),
		c.Flows, c.Bytes, c.SamplingRate, c.FirstSeen.UTC(), c.LastSeen.UTC(),
		c.Suppressed, c.Explanation, c.ASN, c.ASOrg, c.Country, intel, c.ModelVersion)
}

func clampU32(n int) uint32 {
	switch {
	case n < 0:
		return 0
	case int64(n) > int64(^uint32(0)):
		return ^uint32(0)
	}
	return uint32(n)
}
