package enrich

import (
	"fmt"
	"strings"
	"testing"
)

func TestDefaultConfigValidates(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default configuration does not validate: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	many := make([]IntelList, MaxIntelLists+1)
	for i := range many {
		many[i] = IntelList{Name: fmt.Sprintf("l%d", i), File: "x"}
	}
	tests := []struct {
		name string
		set  func(*Config)
		want []string // substrings of the error; none means valid
	}{
		{"defaults", func(*Config) {}, nil},
		{"cache off", func(c *Config) { c.CacheSize = 0 }, nil},
		{"negative cache", func(c *Config) { c.CacheSize = -1 }, []string{"cache_size"}},
		{"huge cache", func(c *Config) { c.CacheSize = MaxCacheSize + 1 }, []string{"cache_size"}},
		{"negative delay", func(c *Config) { c.ReloadDelay = -1 }, []string{"reload_delay"}},
		{"intel ok", func(c *Config) {
			c.Intel = []IntelList{{Name: "feodo", File: "f.csv", Column: "dst_ip"}, {Name: "drop.v4", File: "d.txt", Column: "2"}}
		}, nil},
		{"intel no name", func(c *Config) { c.Intel = []IntelList{{File: "f"}} }, []string{"intel[0].name", "must not be empty"}},
		{"intel comma", func(c *Config) { c.Intel = []IntelList{{Name: "a,b", File: "f"}} }, []string{"intel[0].name", "letters, digits"}},
		{"intel dup", func(c *Config) { c.Intel = []IntelList{{Name: "a", File: "f"}, {Name: "a", File: "g"}} }, []string{"intel[1].name", "intel[0]"}},
		{"intel no file", func(c *Config) { c.Intel = []IntelList{{Name: "a"}} }, []string{"intel[0].file"}},
		{"intel column 0", func(c *Config) { c.Intel = []IntelList{{Name: "a", File: "f", Column: "0"}} }, []string{"intel[0].column"}},
		{"too many lists", func(c *Config) { c.Intel = many }, []string{"at most 64"}},
		{"provider no class", func(c *Config) { c.Providers = []ProviderRule{{ASNs: []uint32{1}}} }, []string{"providers[0].class"}},
		{"provider no match", func(c *Config) { c.Providers = []ProviderRule{{Class: "cdn"}} }, []string{"providers[0]", "asns or org_contains"}},
		{"provider empty org", func(c *Config) { c.Providers = []ProviderRule{{Class: "cdn", OrgContains: []string{" "}}} }, []string{"providers[0].org_contains[0]"}},
		{"exporter ok", func(c *Config) {
			c.Exporters = []Exporter{{Addr: "192.0.2.1", Name: "r1", Interfaces: []Interface{{Index: 1, Name: "xe-0/0/0"}}}, {Addr: "2001:db8::1", Name: "r2"}}
		}, nil},
		{"exporter bad addr", func(c *Config) { c.Exporters = []Exporter{{Addr: "r1", Name: "r1"}} }, []string{"exporters[0].addr"}},
		{"exporter dup addr", func(c *Config) {
			c.Exporters = []Exporter{{Addr: "192.0.2.1", Name: "a"}, {Addr: "::ffff:192.0.2.1", Name: "b"}}
		}, []string{"exporters[1].addr", "exporters[0]"}},
		{"exporter dup ifindex", func(c *Config) {
			c.Exporters = []Exporter{{Addr: "192.0.2.1", Interfaces: []Interface{{Index: 1, Name: "a"}, {Index: 1, Name: "b"}}}}
		}, []string{"exporters[0].interfaces[1].index"}},
		{"exporter nothing", func(c *Config) { c.Exporters = []Exporter{{Addr: "192.0.2.1"}} }, []string{"exporters[0]", "a name or interfaces"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.set(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
