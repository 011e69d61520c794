package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"

	"github.com/ccflow/ccflow/enrich"
)

// runEnrichFlags runs a command that has the global and enrichment flags
// and returns the configuration it ends with.
func runEnrichFlags(t *testing.T, args ...string) (enrich.Config, error) {
	t.Helper()
	var got Config
	root := &cobra.Command{Use: "ccflow", SilenceUsage: true, SilenceErrors: true}
	addGlobalFlags(root)
	sub := &cobra.Command{
		Use: "sub",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, done, err := loadConfig(cmd)
			if err != nil || done {
				return err
			}
			if err := applyEnrichFlags(cmd.Flags(), &cfg); err != nil {
				return err
			}
			got = cfg
			return nil
		},
	}
	addEnrichFlags(sub.Flags())
	root.AddCommand(sub)
	root.SetArgs(append([]string{"sub"}, args...))
	root.SetOut(&bytes.Buffer{})
	err := root.Execute()
	return got.Enrich, err
}

func TestEnrichFlags(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "ccflow.yaml")
	if err := os.WriteFile(cfgFile, []byte("enrich:\n  asn_db: /file/asn.mmdb\n  intel:\n    - name: feodo\n      file: /old/feodo.csv\n      column: dst_ip\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		asn, cc string
		intel   []enrich.IntelList
		wantErr []string
	}{
		{name: "none"},
		{name: "databases", args: []string{"--asn-db", "/x/asn.mmdb", "--country-db", "/x/cc.mmdb"}, asn: "/x/asn.mmdb", cc: "/x/cc.mmdb"},
		{name: "lists", args: []string{"--intel", "c2=/lists/c2.txt", "--intel", "feodo:dst_ip=/lists/ip=block,list.csv", "--intel", "drop:2=/d.csv"},
			intel: []enrich.IntelList{{Name: "c2", File: "/lists/c2.txt"}, {Name: "feodo", File: "/lists/ip=block,list.csv", Column: "dst_ip"}, {Name: "drop", File: "/d.csv", Column: "2"}}},
		{name: "flags over file", args: []string{"--config", cfgFile, "--asn-db", "/flag/asn.mmdb", "--intel", "feodo=/new/feodo.csv", "--intel", "extra=/e.txt"},
			asn: "/flag/asn.mmdb", intel: []enrich.IntelList{{Name: "feodo", File: "/new/feodo.csv", Column: "dst_ip"}, {Name: "extra", File: "/e.txt"}}},
		{name: "file only", args: []string{"--config", cfgFile}, asn: "/file/asn.mmdb", intel: []enrich.IntelList{{Name: "feodo", File: "/old/feodo.csv", Column: "dst_ip"}}},
		{name: "no equals", args: []string{"--intel", "c2"}, wantErr: []string{`flag --intel "c2"`, "NAME=FILE"}},
		{name: "no file", args: []string{"--intel", "c2="}, wantErr: []string{`flag --intel "c2="`, "NAME=FILE"}},
		{name: "no name", args: []string{"--intel", "=/x"}, wantErr: []string{`flag --intel "=/x"`, "must not be empty"}},
		{name: "bad name", args: []string{"--intel", "a,b=/x"}, wantErr: []string{`flag --intel "a,b=/x"`, "letters, digits"}},
		{name: "empty column", args: []string{"--intel", "a:=/x"}, wantErr: []string{"empty COLUMN"}},
		{name: "column 0", args: []string{"--intel", "a:0=/x"}, wantErr: []string{"flag --intel", "enrich.intel[0].column", "start at 1"}},
		{name: "twice", args: []string{"--intel", "a=/x", "--intel", "a=/y"}, wantErr: []string{`list "a" is given twice`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := runEnrichFlags(t, tt.args...)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error, want %q", tt.wantErr)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ASNDB != tt.asn || got.CountryDB != tt.cc {
				t.Errorf("asn_db, country_db = %q, %q; want %q, %q", got.ASNDB, got.CountryDB, tt.asn, tt.cc)
			}
			if diff := cmp.Diff(tt.intel, got.Intel); diff != "" {
				t.Errorf("intel (-want +got)\n%s", diff)
			}
		})
	}
}
