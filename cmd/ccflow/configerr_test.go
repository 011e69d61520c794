package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigErrorsNameFileLineKey checks, for each class of configuration
// error, that `ccflow run --config FILE` fails with a message naming the
// file, the line and column, and the key (and, where there is a fixed set,
// the allowed values).
func TestConfigErrorsNameFileLineKey(t *testing.T) {
	busy, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	missingKeys := filepath.Join(t.TempDir(), "no-such-keys")

	tests := []struct {
		name string
		yaml string
		want []string // the first follows the file name; the rest appear anywhere
	}{
		{"unknown key", "collector:\n  netflow:\n    adress: 127.0.0.1:2055\n",
			[]string{":3:5: collector.netflow.adress: unknown key (allowed: addr,"}},
		{"wrong type", "detect:\n  window: soon\n",
			[]string{":2:11: detect.window: \"soon\" is not a duration"}},
		{"not allowed", "bus:\n  kind: kafak\n",
			[]string{":2:9: bus.kind: \"kafak\" is not allowed (allowed: inproc, kafka)"}},
		{"bad CIDR", "privacy:\n  subscribers:\n    - 192.0.2.0/24\n    - 192.0.2.0/33\n",
			[]string{":4:7: privacy.subscribers[1]:", "not a CIDR"}},
		{"missing key file", fmt.Sprintf("privacy:\n  subscribers: [192.0.2.0/24]\n  keys_dir: %s\n  create_keys: false\n", missingKeys),
			[]string{":3:13: privacy.keys_dir:", "does not exist"}},
		{"port in use", fmt.Sprintf("privacy:\n  subscribers: [192.0.2.0/24]\ncollector:\n  ipfix:\n    addr: %s\n", busy.LocalAddr()),
			[]string{":5:11: collector.ipfix.addr:", "address already in use"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "ccflow.yaml")
			// Everything else points into the test's directory and off
			// the default ports.
			base := fmt.Sprintf("metrics:\n  addr: \"\"\nsink:\n  parquet:\n    dir: %s\nanalysis:\n  state_dir: %s\n  candidates_file: %s\n",
				filepath.Join(dir, "data"), filepath.Join(dir, "state"), filepath.Join(dir, "candidates.jsonl"))
			if err := os.WriteFile(file, []byte(tt.yaml+base), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := newRootCmd()
			var out bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			args := []string{"run", "--config", file, "--netflow-addr", "", "--sflow-addr", ""}
			if tt.name != "port in use" {
				args = append(args, "--ipfix-addr", "")
			}
			if !strings.Contains(tt.yaml, "keys_dir") {
				args = append(args, "--keys", filepath.Join(dir, "keys"))
			}
			cmd.SetArgs(args)
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // a run that starts despite the error stops at once
			err := cmd.ExecuteContext(ctx)
			if err == nil {
				t.Fatalf("no error; output:\n%s", out.String())
			}
			for i, w := range tt.want {
				if i == 0 {
					w = file + w
				}
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}
