package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

type intelList struct {
	Name string `yaml:"name" doc:"List name."`
	File string `yaml:"file" doc:"List file."`
}

type inner struct {
	Addr    string        `yaml:"addr" doc:"Listen address."`
	Workers int           `yaml:"workers" doc:"Worker count."`
	Timeout time.Duration `yaml:"timeout" doc:"Timeout."`
}

type testConfig struct {
	Kind     string            `yaml:"kind" doc:"Bus kind." enum:"inproc|kafka"`
	Enabled  bool              `yaml:"enabled" doc:"On or off."`
	Netflow  inner             `yaml:"netflow" doc:"NetFlow listener."`
	Prefixes []string          `yaml:"prefixes" doc:"Subscriber prefixes."`
	Intel    []intelList       `yaml:"intel" doc:"Intel lists."`
	Names    map[string]string `yaml:"names" doc:"Exporter names."`
	Rate     uint32            `yaml:"rate" doc:"Sampling rate."`
}

func defaults() testConfig {
	return testConfig{Kind: "inproc", Netflow: inner{Addr: ":2055", Workers: 2, Timeout: time.Second}}
}

func (c *testConfig) validate() error {
	var errs []error
	if err := CheckEnums(c); err != nil {
		errs = append(errs, err)
	}
	if c.Netflow.Workers < 1 {
		errs = append(errs, Prefix("netflow", Errorf("workers", "must be at least 1")))
	}
	return errors.Join(errs...)
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ccflow.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadLayers(t *testing.T) {
	p := writeFile(t, `
kind: kafka
netflow:
  addr: ":9995"
  timeout: 5s
prefixes: [192.0.2.0/24, "2001:db8::/32"]
intel:
  - name: feodo
    file: /tmp/feodo.txt
names:
  192.0.2.1: edge-1
`)
	cfg := defaults()
	l := Loader{
		File:      p,
		EnvPrefix: "CCFLOW_",
		EnvIgnore: []string{"CCFLOW_TEST_"},
		Env:       []string{"CCFLOW_NETFLOW_WORKERS=4", "CCFLOW_TEST_KAFKA=x", "PATH=/bin"},
		Overrides: []Override{{Key: "netflow.addr", Value: "127.0.0.1:2055", Origin: "flag --netflow-addr"}},
	}
	if err := l.Load(&cfg, cfg.validate); err != nil {
		t.Fatal(err)
	}
	want := testConfig{
		Kind:     "kafka",
		Netflow:  inner{Addr: "127.0.0.1:2055", Workers: 4, Timeout: 5 * time.Second},
		Prefixes: []string{"192.0.2.0/24", "2001:db8::/32"},
		Intel:    []intelList{{Name: "feodo", File: "/tmp/feodo.txt"}},
		Names:    map[string]string{"192.0.2.1": "edge-1"},
	}
	if d := cmp.Diff(cfg, want); d != "" {
		t.Fatalf("config (-got +want):\n%s", d)
	}

	// Dump round-trips through the loader.
	p2 := writeFile(t, string(Dump(&cfg, true)))
	again := defaults()
	l2 := Loader{File: p2}
	if err := l2.Load(&again, again.validate); err != nil {
		t.Fatalf("reload dump: %v\n%s", err, Dump(&cfg, true))
	}
	if d := cmp.Diff(again, want); d != "" {
		t.Fatalf("dump round trip (-got +want):\n%s", d)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		env  []string
		want []string
	}{
		{"unknown key", "netflow:\n  adr: x\n", nil, []string{":2:3: netflow.adr: unknown key (allowed: addr, timeout, workers)"}},
		{"wrong type", "netflow:\n  workers: many\n", nil, []string{":2:12: netflow.workers: \"many\" is not an integer"}},
		{"bad duration", "netflow:\n  timeout: 5 parsecs\n", nil, []string{":2:12: netflow.timeout: \"5 parsecs\" is not a duration"}},
		{"enum", "kind: kafak\n", nil, []string{":1:7: kind: \"kafak\" is not allowed (allowed: inproc, kafka)"}},
		{"validate", "netflow:\n  workers: 0\n", nil, []string{":2:12: netflow.workers: must be at least 1"}},
		{"mapping expected", "netflow: 3\n", nil, []string{":1:10: netflow: expected a mapping"}},
		{"overflow", "rate: 99999999999\n", nil, []string{":1:7: rate: \"99999999999\" is not a non-negative integer that fits in 32 bits"}},
		{"env unknown", "", []string{"CCFLOW_NOPE=1"}, []string{"environment CCFLOW_NOPE: unknown configuration variable"}},
		{"env type", "", []string{"CCFLOW_ENABLED=maybe"}, []string{"environment CCFLOW_ENABLED: enabled: \"maybe\" is not true or false"}},
		{"syntax", "netflow:\n  addr: [1,\n", nil, []string{"invalid YAML"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, tt.yaml)
			cfg := defaults()
			l := Loader{File: p, Env: tt.env, EnvPrefix: "CCFLOW_"}
			err := l.Load(&cfg, cfg.validate)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if tt.env == nil && !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func TestReferenceListsEveryKey(t *testing.T) {
	cfg := defaults()
	ref := Reference(&cfg, "CCFLOW_")
	for _, k := range []string{"`kind`", "one of inproc, kafka", "`netflow.timeout`", "`CCFLOW_NETFLOW_ADDR`", "`intel[].file`", "`\":2055\"`"} {
		if !strings.Contains(ref, k) {
			t.Errorf("reference lacks %s:\n%s", k, ref)
		}
	}
}
