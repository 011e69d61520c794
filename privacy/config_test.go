package privacy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ccflow/ccflow/config"
)

func TestDefaultConfigValidates(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default configuration does not validate: %v", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		keys   []string // keys of the expected FieldErrors
	}{
		{"ok", func(c *Config) {
			c.Subscribers = []string{"192.0.2.0/24", "2001:db8::/32", "192.0.2.1", "::ffff:10.0.0.0/104"}
		}, nil},
		{"bad prefix", func(c *Config) { c.Subscribers = []string{"192.0.2.0/24", "192.0.2.0/33", "nonsense"} }, []string{"subscribers[1]", "subscribers[2]"}},
		{"short mapped prefix", func(c *Config) { c.Subscribers = []string{"::ffff:0:0/90"} }, []string{"subscribers[0]"}},
		{"epoch too short", func(c *Config) { c.EpochLength = time.Minute }, []string{"epoch_length"}},
		{"epoch not whole seconds", func(c *Config) { c.EpochLength = time.Hour + time.Millisecond }, []string{"epoch_length"}},
		{"coarsen without max", func(c *Config) { c.Interfaces = PolicyCoarsen }, []string{"interface_max"}},
		{"reload too fast", func(c *Config) { c.ReloadInterval = time.Millisecond }, []string{"reload_interval"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mutate(&c)
			var keys []string
			for _, e := range flattenErrs(c.Validate()) {
				var fe *config.FieldError
				if !errors.As(e, &fe) {
					t.Fatalf("not a FieldError: %v", e)
				}
				keys = append(keys, fe.Key)
				if strings.Contains(fe.Msg, "192.0.2") {
					t.Errorf("error quotes the input: %v", fe)
				}
			}
			if diff := cmp.Diff(tt.keys, keys); diff != "" {
				t.Errorf("error keys (-want +got):\n%s", diff)
			}
		})
	}
}

func flattenErrs(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flattenErrs(e)...)
		}
		return out
	}
	return []error{err}
}

func TestLoadSubscribers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subs.txt")
	content := "# ISP prefixes\n\n198.51.100.0/24   # office\n  2001:db8:1::/48\n203.0.113.7\n::ffff:100.64.0.0/106\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSubscribers(Config{Subscribers: []string{"192.0.2.0/25"}, SubscribersFile: path})
	if err != nil {
		t.Fatal(err)
	}
	if s.Len4() != 4 || s.Len6() != 1 {
		t.Errorf("Len4, Len6 = %d, %d", s.Len4(), s.Len6())
	}
	for a, want := range map[string]bool{
		"192.0.2.1": true, "192.0.2.200": false, "198.51.100.77": true, "::ffff:198.51.100.77": true,
		"203.0.113.7": true, "203.0.113.8": false, "2001:db8:1:ffff::1": true, "2001:db8:2::1": false,
		"100.64.1.2": true, "100.128.0.1": false,
	} {
		if got := s.Contains(mustAddr(a)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", a, got, want)
		}
	}
	var zero [16]byte
	if s.contains16(&zero) {
		t.Error("the zero address is a subscriber")
	}

	bad := filepath.Join(t.TempDir(), "bad.txt")
	if err := os.WriteFile(bad, []byte("192.0.2.0/24\n192.0.2.77/40\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadSubscribers(Config{SubscribersFile: bad})
	if err == nil || !strings.Contains(err.Error(), bad+":2:") || strings.Contains(err.Error(), "192.0.2.77") {
		t.Errorf("bad line: %v (want file:line, without the line's text)", err)
	}
	if _, err := LoadSubscribers(Config{SubscribersFile: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Error("missing file: no error")
	}
	empty := filepath.Join(t.TempDir(), "empty.txt")
	_ = os.WriteFile(empty, []byte("# nothing\n"), 0o600)
	if _, err := LoadSubscribers(Config{SubscribersFile: empty}); !errors.Is(err, ErrNoSubscribers) {
		t.Errorf("empty: %v", err)
	}
}
