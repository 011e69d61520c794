package detect

import (
	"errors"
	"time"

	"github.com/ccflow/ccflow/config"
)

// Config configures the detector. Durations are in event time (the flows'
// own timestamps), never wall-clock time.
type Config struct {
	// Window is the length of the detection window.
	Window time.Duration `yaml:"window" doc:"Length of the detection window (event time). Hours suit carrier traffic; replaying a capture of a few minutes works with the default too, because coverage is measured against the span of the data actually seen in the window."`
	// Hop is how often a window is evaluated.
	Hop time.Duration `yaml:"hop" doc:"Evaluation hop: a window ending at every multiple of this (event time) is scored. At most window."`
	// AllowedLateness is how far behind the newest flow a flow may be and
	// still count.
	AllowedLateness time.Duration `yaml:"allowed_lateness" doc:"How long after a window's end flows may still arrive for it: the watermark is the newest flow start minus this. Later flows are dropped and counted."`

	// MaxPairs and MaxBytes bound the state.
	MaxPairs int   `yaml:"max_pairs" doc:"Most (subscriber, remote endpoint) pairs tracked at once; beyond it idle, low-score pairs are evicted first. 0 means the structural limit of 134,217,726."`
	MaxBytes int64 `yaml:"max_bytes" doc:"Memory budget for detector state in bytes (estimated, see the tracked-bytes metric); beyond it pairs are evicted as for max_pairs. 0 means no byte limit."`
	// SampleSize is the number of recent connection starts kept per pair.
	SampleSize int `yaml:"sample_size" doc:"Connection start times (with flow sizes) kept per pair: the most recent ones in the window. 16 to 255."`

	// MinConnections is the least number of observed connections for a
	// pair to be scored.
	MinConnections int `yaml:"min_connections" doc:"Least observed connections (after merging starts closer than min_period) for a pair to be scored."`
	// FullConnections is the number of observed connections at which the
	// count component reaches 1.
	FullConnections int `yaml:"full_connections" doc:"Observed connections at which the connection-count component reaches 1; below it scores are scaled down as evidence is thin."`
	// MinPeriod and MaxPeriod bound the beacon periods looked for.
	MinPeriod time.Duration `yaml:"min_period" doc:"Shortest beacon period looked for; connection starts closer than this are merged into one (retries, parallel connections)."`
	MaxPeriod time.Duration `yaml:"max_period" doc:"Longest beacon period looked for."`
	// PeriodTolerance is the phase tolerance of the period fit.
	PeriodTolerance float64 `yaml:"period_tolerance" doc:"Tolerance of the period fit, as a fraction of the period: an interval counts as k beats when it is within this of k periods."`

	// Threshold is the combined score at which an endpoint is reported.
	Threshold float64 `yaml:"threshold" doc:"Combined score (0..1) at which an endpoint becomes a candidate. The default, 0.55, is about one subscriber whose pair score reaches pair_threshold (timing alone contributes at most 0.9 of the pair score)."`
	// PairThreshold is the pair beacon score at which a pair beacons.
	PairThreshold float64 `yaml:"pair_threshold" doc:"Pair beacon score (0..1) at which a pair counts as beaconing (for fan-in, fan-out and pair-score output)."`
	// FanOutFree is the number of beaconing endpoints per subscriber that
	// is not discounted.
	FanOutFree int `yaml:"fan_out_free" doc:"Beaconing endpoints a subscriber may have before its pairs are discounted (peer-to-peer clients and pollers beacon to many endpoints with one schedule; a bot to few)."`
	// FanInExact is the number of subscribers up to which fan-in is exact.
	FanInExact int `yaml:"fan_in_exact" doc:"Fan-in (distinct subscribers) is counted exactly up to this many tracked pairs per endpoint, and with a HyperLogLog sketch above it."`
	// PopularMinSubscribers and PopularShare define popularity.
	PopularMinSubscribers int     `yaml:"popular_min_subscribers" doc:"Endpoints whose popularity baseline is below this many subscribers are never considered popular."`
	PopularShare          float64 `yaml:"popular_share" doc:"Share of the active subscribers at which an endpoint's popularity reaches 1 (popularity discounts fan-in and the combined score)."`
	// PopularityHalfLife is the half-life of the popularity baseline.
	PopularityHalfLife time.Duration `yaml:"popularity_half_life" doc:"Half-life of the slowly decaying popularity baseline of each endpoint (its fan-in over past windows)."`

	// IntelBoost and ProviderDiscount apply enrichment.
	IntelBoost       float64 `yaml:"intel_boost" doc:"How much an intel-list match raises the combined score: score + (1-score)*intel_boost."`
	ProviderDiscount float64 `yaml:"provider_discount" doc:"How much a provider class from enrichment (cdn, cloud, push, ...) lowers the combined score: score*(1-provider_discount)."`

	// Allowlists configures the allowlists.
	Allowlists AllowlistConfig `yaml:"allowlists" doc:"Allowlists of remote endpoints (CIDR and port rules) whose candidates are suppressed."`
}

// AllowlistConfig selects the allowlists.
type AllowlistConfig struct {
	// Builtin names built-in lists (see BuiltinAllowlists).
	Builtin []string `yaml:"builtin" doc:"Built-in allowlists to use: ntp, dns, push, special (non-routable and multicast ranges), cdn (off by default: it would hide C&C fronted by a CDN)."`
	// Files are operator allowlist files.
	Files []string `yaml:"files" doc:"Further allowlist files, one rule per line: CIDR or * then optional PORT[-PORT][/PROTO], # comments (see deploy/allowlists/)."`
}

// DefaultConfig returns the default detector configuration: windows of
// 6 hours evaluated every hour, suited to carrier traffic.
func DefaultConfig() Config {
	return Config{
		Window:                6 * time.Hour,
		Hop:                   time.Hour,
		AllowedLateness:       5 * time.Minute,
		MaxPairs:              10_000_000,
		MaxBytes:              2 << 30,
		SampleSize:            64,
		MinConnections:        6,
		FullConnections:       64,
		MinPeriod:             time.Second,
		MaxPeriod:             6 * time.Hour,
		PeriodTolerance:       0.25,
		Threshold:             0.55,
		PairThreshold:         0.6,
		FanOutFree:            4,
		FanInExact:            64,
		PopularMinSubscribers: 20,
		PopularShare:          0.05,
		PopularityHalfLife:    7 * 24 * time.Hour,
		IntelBoost:            0.5,
		ProviderDiscount:      0.3,
		Allowlists:            AllowlistConfig{Builtin: []string{"ntp", "dns", "push", "special"}},
	}
}

// Validate checks the configuration; every problem is a *config.FieldError.
func (c Config) Validate() error {
	var errs []error
	if c.Window <= 0 {
		errs = append(errs, config.Errorf("window", "must be positive"))
	}
	if c.Hop <= 0 || c.Hop > c.Window {
		errs = append(errs, config.Errorf("hop", "must be positive and at most window (%s)", c.Window))
	}
	if c.AllowedLateness < 0 {
		errs = append(errs, config.Errorf("allowed_lateness", "must not be negative"))
	}
	if c.MaxPairs < 0 || c.MaxPairs > maxPairIndex {
		errs = append(errs, config.Errorf("max_pairs", "must be between 0 and %d", maxPairIndex))
	}
	if c.MaxBytes < 0 {
		errs = append(errs, config.Errorf("max_bytes", "must not be negative"))
	}
	if c.SampleSize < 16 || c.SampleSize > 255 {
		errs = append(errs, config.Errorf("sample_size", "must be between 16 and 255"))
	}
	if c.MinConnections < 4 || c.MinConnections > c.SampleSize {
		errs = append(errs, config.Errorf("min_connections", "must be between 4 and sample_size (%d)", c.SampleSize))
	}
	if c.FullConnections < c.MinConnections {
		errs = append(errs, config.Errorf("full_connections", "must be at least min_connections (%d)", c.MinConnections))
	}
	if c.MinPeriod < time.Millisecond {
		errs = append(errs, config.Errorf("min_period", "must be at least 1ms"))
	}
	if c.MaxPeriod <= c.MinPeriod {
		errs = append(errs, config.Errorf("max_period", "must be above min_period (%s)", c.MinPeriod))
	}
	if c.PeriodTolerance <= 0 || c.PeriodTolerance >= 0.5 {
		errs = append(errs, config.Errorf("period_tolerance", "must be in (0, 0.5)"))
	}
	for _, f := range []struct {
		key string
		v   float64
	}{{"threshold", c.Threshold}, {"pair_threshold", c.PairThreshold}, {"intel_boost", c.IntelBoost}, {"provider_discount", c.ProviderDiscount}} {
		if f.v < 0 || f.v > 1 {
			errs = append(errs, config.Errorf(f.key, "must be between 0 and 1"))
		}
	}
	if c.PopularShare <= 0 || c.PopularShare > 1 {
		errs = append(errs, config.Errorf("popular_share", "must be in (0, 1]"))
	}
	if c.FanOutFree < 1 {
		errs = append(errs, config.Errorf("fan_out_free", "must be at least 1"))
	}
	if c.FanInExact < 1 {
		errs = append(errs, config.Errorf("fan_in_exact", "must be at least 1"))
	}
	if c.PopularMinSubscribers < 1 {
		errs = append(errs, config.Errorf("popular_min_subscribers", "must be at least 1"))
	}
	if c.PopularityHalfLife <= 0 {
		errs = append(errs, config.Errorf("popularity_half_life", "must be positive"))
	}
	for i, name := range c.Allowlists.Builtin {
		if _, ok := builtinAllowlists[name]; !ok {
			errs = append(errs, &config.FieldError{Key: "allowlists.builtin", Msg: "unknown built-in allowlist " + quote(name) + " (item " + itoa(i) + ")", Allowed: BuiltinAllowlists()})
		}
	}
	return errors.Join(errs...)
}
