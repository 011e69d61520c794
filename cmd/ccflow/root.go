package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ccflow/ccflow/analysis"
	"github.com/ccflow/ccflow/bus"
	"github.com/ccflow/ccflow/collector"
	"github.com/ccflow/ccflow/config"
	"github.com/ccflow/ccflow/detect"
	"github.com/ccflow/ccflow/enrich"
	"github.com/ccflow/ccflow/privacy"
	"github.com/ccflow/ccflow/sink"
)

// Config is ccflow's whole configuration: one section per stage. Every key
// is documented by its doc tag; `ccflow config sample` prints them all.
type Config struct {
	Log       LogConfig        `yaml:"log" doc:"Logging."`
	Metrics   MetricsConfig    `yaml:"metrics" doc:"Operations HTTP server: /metrics, /healthz, /readyz."`
	Collector collector.Config `yaml:"collector" doc:"Flow collector: UDP listeners and decoding."`
	Privacy   privacy.Config   `yaml:"privacy" doc:"Subscriber classification, pseudonymization and minimization."`
	Enrich    enrich.Config    `yaml:"enrich" doc:"Remote-side enrichment: ASN, country, threat intel, names."`
	Bus       bus.Config       `yaml:"bus" doc:"Transport between collector and detector."`
	Detect    detect.Config    `yaml:"detect" doc:"Streaming C&C detector."`
	Analysis  analysis.Config  `yaml:"analysis" doc:"Detector side of the pipeline: checkpoints, offsets, candidate output."`
	Sink      sink.Config      `yaml:"sink" doc:"Storage of flows, pair scores and candidates."`
}

// LogConfig configures logging.
type LogConfig struct {
	Level  string `yaml:"level" doc:"Minimum log level." enum:"debug|info|warn|error"`
	Format string `yaml:"format" doc:"Log format on stderr." enum:"text|json"`
}

// MetricsConfig configures the operations HTTP server.
type MetricsConfig struct {
	Addr string `yaml:"addr" doc:"HOST:PORT of the HTTP server for /metrics, /healthz and /readyz; empty turns it off."`
}

// DefaultConfig returns the defaults of every stage.
func DefaultConfig() Config {
	return Config{
		Log:       LogConfig{Level: "info", Format: "text"},
		Metrics:   MetricsConfig{Addr: "127.0.0.1:9465"},
		Collector: collector.DefaultConfig(),
		Privacy:   privacy.DefaultConfig(),
		Enrich:    enrich.DefaultConfig(),
		Bus:       bus.DefaultConfig(),
		Detect:    detect.DefaultConfig(),
		Analysis:  analysis.DefaultConfig(),
		Sink:      sink.DefaultConfig(),
	}
}

// Validate checks every section and returns all problems found, each a
// *config.FieldError naming its key.
func (c *Config) Validate() error {
	return errors.Join(
		config.CheckEnums(c),
		config.Prefix("collector", c.Collector.Validate()),
		config.Prefix("privacy", c.Privacy.Validate()),
		config.Prefix("enrich", c.Enrich.Validate()),
		config.Prefix("bus", c.Bus.Validate()),
		config.Prefix("detect", c.Detect.Validate()),
		config.Prefix("analysis", c.Analysis.Validate()),
		config.Prefix("sink", c.Sink.Validate()),
	)
}

const (
	envPrefix = "CCFLOW_"
	// keyAnnotation marks a flag that overrides a configuration key.
	keyAnnotation = "ccflow.config-key"
)

func addGlobalFlags(root *cobra.Command) {
	pf := root.PersistentFlags()
	pf.String("config", "", "YAML configuration `FILE` (every key is documented by \"ccflow config sample\")")
	pf.Bool("check", false, "validate the configuration and exit")
	pf.Bool("dump", false, "print the effective configuration as YAML and exit")
	bindFlag(pf, "log-level", "log.level", "minimum log level: debug, info, warn or error")
	bindFlag(pf, "log-format", "log.format", "log format: text or json")
}

// bindFlag defines a string flag that overrides configuration key. The
// value is parsed like the key's CCFLOW_* environment variable (lists are
// comma-separated), so flags, environment and file agree on syntax.
func bindFlag(fs *pflag.FlagSet, name, key, usage string) {
	fs.String(name, "", usage+" (config "+key+")")
	_ = fs.SetAnnotation(name, keyAnnotation, []string{key})
}

// loadConfig loads defaults, the --config file, CCFLOW_* variables and the
// flags bound with bindFlag. It handles --check and --dump: when either is
// set it prints and returns done=true.
func loadConfig(cmd *cobra.Command) (cfg Config, done bool, err error) {
	cfg, _, done, err = loadConfigOrigins(cmd)
	return cfg, done, err
}

// loadConfigOrigins is loadConfig that also returns the loader, whose
// Attribute method names the file, line and key of start-up errors (a port
// in use, a missing key directory). Besides the bound flags it applies the
// repeatable --intel flag (when the command has it) and lets
// --clickhouse-dsn select the ClickHouse sink unless sink.kind is set.
func loadConfigOrigins(cmd *cobra.Command) (cfg Config, l *config.Loader, done bool, err error) {
	cfg = DefaultConfig()
	file, _ := cmd.Flags().GetString("config")
	l = &config.Loader{File: file, Env: os.Environ(), EnvPrefix: envPrefix, EnvIgnore: []string{"CCFLOW_TEST_"}}
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		keys := f.Annotations[keyAnnotation]
		if len(keys) == 0 || !f.Changed {
			return
		}
		l.Overrides = append(l.Overrides, config.Override{Key: keys[0], Value: f.Value.String(), Origin: "flag --" + f.Name})
	})
	validate := func() error {
		if f := cmd.Flags().Lookup("intel"); f != nil && f.Changed {
			l.SetOrigin("enrich.intel", "flag --intel")
		}
		if err := applyEnrichFlags(cmd.Flags(), &cfg); err != nil {
			return err
		}
		if cfg.Sink.ClickHouse.DSN != "" && !l.IsSet("sink.kind") {
			cfg.Sink.Kind = "clickhouse"
		}
		return cfg.Validate()
	}
	if err := l.Load(&cfg, validate); err != nil {
		return cfg, l, false, fmt.Errorf("invalid configuration:\n  %s", strings.ReplaceAll(err.Error(), "\n", "\n  "))
	}
	if dump, _ := cmd.Flags().GetBool("dump"); dump {
		_, err := cmd.OutOrStdout().Write(config.Dump(&cfg, false))
		return cfg, l, true, err
	}
	if check, _ := cmd.Flags().GetBool("check"); check {
		src := "defaults"
		if file != "" {
			src = file
		}
		fmt.Fprintf(cmd.OutOrStdout(), "configuration OK (%s)\n", src)
		return cfg, l, true, nil
	}
	return cfg, l, false, nil
}

// newLogger builds the structured logger from the configuration. replace,
// when not nil, is installed as the handler's ReplaceAttr (the privacy
// stage's redaction backstop).
func newLogger(w io.Writer, c LogConfig, replace func([]string, slog.Attr) slog.Attr) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: replace}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
