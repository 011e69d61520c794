package sim

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Config describes the synthetic ISP. Every duration is event time. The
// zero value is not valid: start from DefaultConfig.
type Config struct {
	// Seed makes a run reproducible: the same Config (Seed and Start
	// included) gives the same records and the same truth.
	Seed uint64
	// Start is the event time of the first simulated second; it is
	// truncated to a whole second.
	Start time.Time
	// Subscribers is the number of subscribers.
	Subscribers int
	// SubscriberPrefixes are the prefixes subscribers are numbered from: the
	// first IPv4 prefix gives every subscriber its IPv4 address, the first
	// IPv6 prefix (if any) gives the dual-stack ones a /64 each. They must
	// lie in private, shared or documentation space (see AllowedSubscriberSpace)
	// and must not overlap the remote address pools (RemotePools).
	SubscriberPrefixes []netip.Prefix
	// IPv6Share is the fraction of subscribers with IPv6 (dual stack): they
	// reach IPv6-capable popular services over IPv6.
	IPv6Share float64

	// SessionInterval is the mean time between the browsing sessions of one
	// subscriber at the daily average (a diurnal cycle modulates it). Gaps are
	// Pareto distributed (heavy tailed); a session opens a geometric number
	// of connections to popular services and the long tail, a few hundred
	// milliseconds apart, with a DNS lookup first now and then.
	SessionInterval time.Duration
	// ConnectionsPerSession is the mean number of connections of a session.
	ConnectionsPerSession float64
	// PopularServices is the number of popular web, CDN and QUIC endpoints,
	// chosen with Zipf-distributed popularity.
	PopularServices int
	// LongTailShare is the fraction of connections that go to a random
	// rarely-visited endpoint instead of a popular one.
	LongTailShare float64
	// Resolvers is the number of DNS resolvers (53/udp); each subscriber uses one.
	Resolvers int

	// NTPServers is the number of NTP servers (123/udp).
	NTPServers int
	// NTPShare is the fraction of subscribers running an NTP client, which
	// polls one server every 2^k seconds, k in [6, 10] fixed per client.
	NTPShare float64
	// UpdateServers is the number of software update servers (443/tcp).
	UpdateServers int
	// UpdateShare is the fraction of subscribers running an update checker.
	UpdateShare float64
	// UpdateInterval is the update checkers' period.
	UpdateInterval time.Duration
	// UpdateJitter is the update checkers' jitter, a fraction of
	// UpdateInterval (uniform, plus or minus).
	UpdateJitter float64

	// Botnets is the number of botnets, each with its own C&C endpoint.
	Botnets int
	// InfectedPerBotnet is the number of infected subscribers per botnet.
	InfectedPerBotnet int
	// BeaconPeriodMin and BeaconPeriodMax bound the beacon period; each
	// botnet draws its period uniformly from [min, max].
	BeaconPeriodMin time.Duration
	BeaconPeriodMax time.Duration
	// BeaconJitter is the beacon jitter as a fraction of the period: each
	// gap is period*(1 + u*BeaconJitter), u uniform in [-1, 1].
	BeaconJitter float64
	// MissedBeats is the probability that a beacon is skipped (the device
	// is off, the packet lost).
	MissedBeats float64
	// BotnetServices are the (protocol, port) pairs botnets pick their C&C
	// service from, in turn.
	BotnetServices []Service

	// ActiveTimeout caps a flow's duration, like a router's active timeout.
	ActiveTimeout time.Duration
}

// Service is a transport protocol and port, written "tcp/443".
type Service struct {
	// Proto is ProtoTCP or ProtoUDP.
	Proto uint8
	// Port is the server port.
	Port uint16
}

// String returns "tcp/PORT" or "udp/PORT".
func (s Service) String() string { return protoName(s.Proto) + "/" + strconv.Itoa(int(s.Port)) }

// ParseService parses "tcp/443" or "udp/53".
func ParseService(s string) (Service, error) {
	p, port, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return Service{}, fmt.Errorf("service %q: want PROTO/PORT, e.g. tcp/443", s)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return Service{}, fmt.Errorf("service %q: bad port", s)
	}
	switch strings.ToLower(p) {
	case "tcp":
		return Service{ProtoTCP, uint16(n)}, nil
	case "udp":
		return Service{ProtoUDP, uint16(n)}, nil
	}
	return Service{}, fmt.Errorf("service %q: protocol must be tcp or udp", s)
}

func protoName(p uint8) string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	}
	return strconv.Itoa(int(p))
}

// AllowedSubscriberSpace lists where simulated subscribers may live: private
// (RFC 1918, RFC 4193), shared (RFC 6598) and IPv6 documentation (RFC 3849)
// space, so that a simulation never uses a real person's address. (The IPv4
// documentation ranges are part of the simulated internet, RemotePools.)
var AllowedSubscriberSpace = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("2001:db8::/32"),
	netip.MustParsePrefix("fc00::/7"),
}

// RemotePools are where the simulated internet lives: every remote endpoint
// (popular services, resolvers, NTP and update servers, C&C servers, the long
// tail) has an address in one of these documentation (RFC 5737, RFC 9637)
// or benchmarking (RFC 2544) ranges. Named endpoints come from the first
// four, the long tail from 198.19.0.0/16 and 3fff::/20.
var RemotePools = []netip.Prefix{
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("198.18.0.0/16"),
	netip.MustParsePrefix("198.19.0.0/16"),
	netip.MustParsePrefix("3fff::/20"),
}

// DefaultConfig returns a small ISP: 1000 subscribers in 100.64.0.0/10 (20%
// dual stack in 2001:db8::/32), 3 botnets of 5 infected subscribers beaconing
// every 1 to 10 minutes with 10% jitter and 10% missed beats. Start is the
// current time.
func DefaultConfig() Config {
	return Config{
		Seed:                  1,
		Start:                 time.Now().Truncate(time.Second),
		Subscribers:           1000,
		SubscriberPrefixes:    []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("2001:db8::/32")},
		IPv6Share:             0.2,
		SessionInterval:       2 * time.Minute,
		ConnectionsPerSession: 4,
		PopularServices:       300,
		LongTailShare:         0.15,
		Resolvers:             4,
		NTPServers:            4,
		NTPShare:              0.6,
		UpdateServers:         3,
		UpdateShare:           0.5,
		UpdateInterval:        time.Hour,
		UpdateJitter:          0.1,
		Botnets:               3,
		InfectedPerBotnet:     5,
		BeaconPeriodMin:       time.Minute,
		BeaconPeriodMax:       10 * time.Minute,
		BeaconJitter:          0.1,
		MissedBeats:           0.1,
		BotnetServices: []Service{
			{ProtoTCP, 443}, {ProtoTCP, 8080}, {ProtoTCP, 6667}, {ProtoTCP, 1177}, {ProtoUDP, 9999}, {ProtoTCP, 4444},
		},
		ActiveTimeout: time.Minute,
	}
}

// Validate checks the configuration and returns every problem found.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Start.IsZero() {
		bad("start: must be set")
	}
	if c.Subscribers < 1 || c.Subscribers > 1<<24 {
		bad("subscribers: %d, want 1 to %d", c.Subscribers, 1<<24)
	}
	var v4, v6 bool
	for _, p := range c.SubscriberPrefixes {
		if !p.IsValid() {
			bad("subscriber prefix: invalid")
			continue
		}
		p = p.Masked()
		allowed := false
		for _, a := range AllowedSubscriberSpace {
			if a.Bits() <= p.Bits() && a.Contains(p.Addr()) {
				allowed = true
			}
		}
		if !allowed {
			bad("subscriber prefix %s: not in private, shared or documentation space (%v)", p, AllowedSubscriberSpace)
		}
		for _, r := range RemotePools {
			if r.Overlaps(p) {
				bad("subscriber prefix %s: overlaps the simulated internet %s", p, r)
			}
		}
		if p.Addr().Is4() {
			if !v4 {
				v4 = true
				if 32-p.Bits() < 30 && uint64(c.Subscribers) >= 1<<(32-p.Bits())-1 {
					bad("subscriber prefix %s: too small for %d subscribers", p, c.Subscribers)
				}
			}
		} else if !v6 {
			v6 = true
			if p.Bits() > 64-24 && c.IPv6Share > 0 {
				bad("subscriber prefix %s: want /40 or shorter (a /64 per subscriber)", p)
			}
		}
	}
	if !v4 {
		bad("subscriber prefixes: need an IPv4 prefix")
	}
	if c.IPv6Share < 0 || c.IPv6Share > 1 || (c.IPv6Share > 0 && !v6) {
		bad("ipv6 share: %g, want 0 to 1, and an IPv6 subscriber prefix when above 0", c.IPv6Share)
	}
	if c.SessionInterval < time.Second {
		bad("session interval: %s, want at least 1s", c.SessionInterval)
	}
	if c.ConnectionsPerSession < 1 {
		bad("connections per session: %g, want at least 1", c.ConnectionsPerSession)
	}
	if c.PopularServices < 1 || c.PopularServices > 20000 {
		bad("popular services: %d, want 1 to 20000", c.PopularServices)
	}
	for name, v := range map[string]float64{"long tail share": c.LongTailShare, "ntp share": c.NTPShare, "update share": c.UpdateShare, "update jitter": c.UpdateJitter, "beacon jitter": c.BeaconJitter} {
		if v < 0 || v > 1 {
			bad("%s: %g, want 0 to 1", name, v)
		}
	}
	if c.MissedBeats < 0 || c.MissedBeats >= 1 {
		bad("missed beats: %g, want 0 to below 1", c.MissedBeats)
	}
	for name, v := range map[string]int{"resolvers": c.Resolvers, "ntp servers": c.NTPServers, "update servers": c.UpdateServers} {
		if v < 1 || v > 1000 {
			bad("%s: %d, want 1 to 1000", name, v)
		}
	}
	if c.UpdateInterval < time.Minute {
		bad("update interval: %s, want at least 1m", c.UpdateInterval)
	}
	if c.Botnets < 0 || c.Botnets > 1000 {
		bad("botnets: %d, want 0 to 1000", c.Botnets)
	}
	if c.Botnets > 0 {
		if c.InfectedPerBotnet < 1 || c.Botnets*c.InfectedPerBotnet > c.Subscribers {
			bad("infected per botnet: %d, want 1 to subscribers/botnets", c.InfectedPerBotnet)
		}
		if c.BeaconPeriodMin < time.Second || c.BeaconPeriodMax < c.BeaconPeriodMin {
			bad("beacon period: %s to %s, want 1s <= min <= max", c.BeaconPeriodMin, c.BeaconPeriodMax)
		}
		if len(c.BotnetServices) == 0 {
			bad("botnet services: need at least one")
		}
	}
	for _, s := range c.BotnetServices {
		if (s.Proto != ProtoTCP && s.Proto != ProtoUDP) || s.Port == 0 {
			bad("botnet service %s: want tcp or udp and a port", s)
		}
	}
	if c.ActiveTimeout < time.Second || c.ActiveTimeout > 2*time.Minute {
		bad("active timeout: %s, want 1s to 2m", c.ActiveTimeout)
	}
	return errors.Join(errs...)
}
