package main

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"

	"github.com/ccflow/ccflow/config"
)

// checkInvocation fails the test unless args name a ccflow subcommand and
// only flags that subcommand has.
func checkInvocation(t *testing.T, where string, args []string) {
	t.Helper()
	root := newRootCmd()
	cmd, rest, err := root.Find(args)
	if err != nil || cmd == root {
		t.Errorf("%s: %q is not a ccflow subcommand", where, strings.Join(args, " "))
		return
	}
	for _, a := range rest {
		if !strings.HasPrefix(a, "--") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if cmd.Flags().Lookup(name) == nil && cmd.InheritedFlags().Lookup(name) == nil && root.PersistentFlags().Lookup(name) == nil {
			t.Errorf("%s: ccflow %s has no flag --%s", where, cmd.Name(), name)
		}
	}
}

// TestDeployFiles reads the deployment files the way an operator's tools
// would and checks them against the binary: every CCFLOW_* variable names
// a real configuration key, and every command line names a real
// subcommand and real flags. (No container engine runs here, so the
// compose file is checked by reading.)
func TestDeployFiles(t *testing.T) {
	envKeys := map[string]bool{}
	for _, k := range config.Keys(reflect.TypeOf(Config{})) {
		envKeys[config.EnvName(envPrefix, k.Key)] = true
	}

	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "compose", "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
			Image       string            `yaml:"image"`
			Volumes     []string          `yaml:"volumes"`
		} `yaml:"services"`
	}
	if err := yaml.UnmarshalWithOptions(data, &compose, yaml.AllowDuplicateMapKey()); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	stateVolumes := map[string]string{}
	for name, svc := range compose.Services {
		for k := range svc.Environment {
			if strings.HasPrefix(k, envPrefix) && !envKeys[k] {
				t.Errorf("compose service %s: %s is not a configuration variable", name, k)
			}
		}
		if svc.Image == "ccflow:local" {
			if len(svc.Command) == 0 {
				t.Errorf("compose service %s runs ccflow without a command", name)
				continue
			}
			checkInvocation(t, "compose service "+name, svc.Command)
			if svc.Command[0] == "detect" {
				for _, v := range svc.Volumes {
					vol, _, _ := strings.Cut(v, ":")
					if other, ok := stateVolumes[vol]; ok {
						t.Errorf("detectors %s and %s share the state volume %s", name, other, vol)
					}
					stateVolumes[vol] = name
				}
			}
		}
	}
	if len(stateVolumes) < 2 {
		t.Errorf("the compose file should show at least two detectors, has %d", len(stateVolumes))
	}

	units, _ := filepath.Glob(filepath.Join("..", "..", "deploy", "systemd", "*.service"))
	if len(units) != 3 {
		t.Fatalf("want 3 systemd units, found %v", units)
	}
	execStart := regexp.MustCompile(`(?m)^ExecStart=\S+ (.*)$`)
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		m := execStart.FindSubmatch(b)
		if m == nil {
			t.Errorf("%s: no ExecStart", u)
			continue
		}
		checkInvocation(t, filepath.Base(u), strings.Fields(string(m[1])))
		for _, must := range []string{"NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=", "StateDirectory=ccflow", "ExecReload="} {
			if !strings.Contains(string(b), must) {
				t.Errorf("%s lacks %s", filepath.Base(u), must)
			}
		}
	}
}
