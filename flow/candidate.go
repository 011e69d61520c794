package flow

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// IPProto is an IP protocol number whose text form is a name ("tcp", "udp",
// "icmp", "ipv6-icmp") or the decimal number for other protocols. It is the
// form candidates and truth files use.
type IPProto uint8

var protoNames = map[IPProto]string{1: "icmp", 6: "tcp", 17: "udp", 47: "gre", 50: "esp", 58: "ipv6-icmp", 132: "sctp"}

// String returns the protocol's name, or its number.
func (p IPProto) String() string {
	if n, ok := protoNames[p]; ok {
		return n
	}
	return strconv.Itoa(int(p))
}

// MarshalText implements encoding.TextMarshaler.
func (p IPProto) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler; it accepts names
// (case-insensitive, "icmpv6" and "icmp6" too) and numbers.
func (p *IPProto) UnmarshalText(b []byte) error {
	v, err := ParseIPProto(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// ParseIPProto parses a protocol name or number.
func ParseIPProto(s string) (IPProto, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	switch s {
	case "icmpv6", "icmp6", "ipv6_icmp":
		return 58, nil
	}
	for k, v := range protoNames {
		if v == s {
			return k, nil
		}
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil {
		return 0, fmt.Errorf("unknown IP protocol %q", s)
	}
	return IPProto(n), nil
}

// Components are the parts of a candidate's score, each in [0,1], kept so
// that analysts see why a candidate scored as it did.
type Components struct {
	// Beacon is the beacon score of the endpoint's beaconing pairs.
	Beacon float64 `json:"beacon"`
	// Skew is the inter-arrival symmetry (1 - |Bowley skew|).
	Skew float64 `json:"skew"`
	// MADM is the inter-arrival dispersion score (from MAD / median).
	MADM float64 `json:"madm"`
	// Size is the flow-size regularity.
	Size float64 `json:"size"`
	// Count is the connection-count sufficiency.
	Count float64 `json:"count"`
	// Coverage is how much of the window the connections span.
	Coverage float64 `json:"coverage"`
	// Period is the confidence of the period estimate.
	Period float64 `json:"period"`
	// FanIn is the fan-in score: distinct subscribers beaconing with a
	// similar period, discounted by popularity.
	FanIn float64 `json:"fan_in"`
	// Popularity is the endpoint's popularity (1 = very popular), which
	// discounts the fan-in and combined scores.
	Popularity float64 `json:"popularity"`
	// Intel is the threat-intel boost (1 when the endpoint is listed).
	Intel float64 `json:"intel"`
	// Provider is the provider-class discount (1 = well-known provider).
	Provider float64 `json:"provider"`
}

// Candidate is a remote endpoint that the detector scored as a possible C&C
// server in one window. It carries counts, never subscriber identities.
type Candidate struct {
	// RemoteAddr, RemotePort and Proto name the endpoint.
	RemoteAddr netip.Addr `json:"remote_addr"`
	RemotePort uint16     `json:"remote_port"`
	Proto      IPProto    `json:"proto"`
	// WindowStart and WindowEnd bound the detection window (event time).
	WindowStart time.Time `json:"window_start"`
	WindowEnd   time.Time `json:"window_end"`
	// Score is the combined score in [0,1]; Components its parts.
	Score      float64    `json:"score"`
	Components Components `json:"components"`
	// PeriodS is the estimated beacon period and JitterS its spread, in
	// seconds.
	PeriodS float64 `json:"period_s"`
	JitterS float64 `json:"jitter_s"`
	// Subscribers counts distinct subscribers that reached the endpoint;
	// BeaconingSubscribers those whose connections beacon.
	Subscribers          int `json:"subscribers"`
	BeaconingSubscribers int `json:"beaconing_subscribers"`
	// Flows and Bytes are totals over the window (as observed, not scaled
	// by sampling).
	Flows int64  `json:"flows"`
	Bytes uint64 `json:"bytes"`
	// SamplingRate is the 1:N sampling rate the scores assumed.
	SamplingRate uint32 `json:"sampling_rate"`
	// FirstSeen and LastSeen bound the endpoint's flows in the window.
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	// Suppressed names the allowlist that suppressed the candidate, if
	// any; suppressed candidates are kept for audit but not reported.
	Suppressed string `json:"suppressed,omitempty"`
	// Explanation says in words why the endpoint is a candidate.
	Explanation string `json:"explanation"`
	// ASN, ASOrg and Country describe the remote endpoint (enrichment).
	ASN     uint32 `json:"asn"`
	ASOrg   string `json:"as_org"`
	Country string `json:"country"`
	// Intel lists the threat-intel lists that contain the endpoint.
	Intel []string `json:"intel"`
	// ModelVersion identifies the detector model that produced the score.
	ModelVersion string `json:"model_version"`
}

// Evidence values of PairScore: why the detector emitted a pair's score.
const (
	// EvidenceOwn: the pair's own score reaches the detector's pair
	// threshold (detect.pair_threshold), and its endpoint is not a
	// reported candidate in the window.
	EvidenceOwn = "own"
	// EvidenceBeaconing: a pair of a reported candidate that is counted
	// in the candidate's BeaconingSubscribers: it beacons with the
	// candidate's period, on its own or in the endpoint's pooled fit,
	// whatever its own score.
	EvidenceBeaconing = "beaconing"
	// EvidenceContact: a pair of a reported candidate that reached it in
	// the window but is not counted as beaconing (too few connections, or
	// another schedule). A pair with fewer than 3 connections in the
	// window is not scored: score, components and period are 0.
	EvidenceContact = "contact"
)

// PairScore is the beacon score of one (subscriber pseudonym, remote
// endpoint) pair in one window, for analyst drill-down. It carries the
// pseudonym, never an address. The detector emits the pairs whose own
// score reaches its pair threshold and, for every reported candidate, the
// pairs of the candidate's endpoint (Evidence says which).
type PairScore struct {
	WindowStart time.Time  `json:"window_start"`
	WindowEnd   time.Time  `json:"window_end"`
	Epoch       uint32     `json:"epoch"`
	Sub         Pseudonym  `json:"sub"`
	RemoteAddr  netip.Addr `json:"remote_addr"`
	RemotePort  uint16     `json:"remote_port"`
	Proto       IPProto    `json:"proto"`
	Score       float64    `json:"score"`
	Components  Components `json:"components"`
	PeriodS     float64    `json:"period_s"`
	JitterS     float64    `json:"jitter_s"`
	Flows       int64      `json:"flows"`
	Bytes       uint64     `json:"bytes"`
	FirstSeen   time.Time  `json:"first_seen"`
	LastSeen    time.Time  `json:"last_seen"`
	// SamplingRate is the 1:N sampling rate the score assumed.
	SamplingRate uint32 `json:"sampling_rate"`
	ModelVersion string `json:"model_version"`
	// Evidence says why the score was emitted: EvidenceOwn,
	// EvidenceBeaconing or EvidenceContact.
	Evidence string `json:"evidence"`
}

// MarshalText implements encoding.TextMarshaler (32 hex digits).
func (p Pseudonym) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Pseudonym) UnmarshalText(b []byte) error {
	v, err := ParsePseudonym(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}
