package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEvalReport(t *testing.T) {
	dir := t.TempDir()
	truth := filepath.Join(dir, "truth.csv")
	cands := filepath.Join(dir, "c.jsonl")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(truth, []byte("dataset,infected_src,c2_dst,dport,proto,note\n"+
		"a,10.0.0.1,192.0.2.1,443,tcp,x\n"+
		"a,10.0.0.2,192.0.2.1,443,tcp,same endpoint, second host\n"+
		"a,10.0.0.3,192.0.2.9,53,udp,missed\n"+
		"b,10.0.0.4,2001:db8::7,8080,tcp,\n"), 0o644))
	must(os.WriteFile(cands, []byte(
		`{"remote_addr":"198.51.100.4","remote_port":80,"proto":"tcp","score":0.9,"explanation":"benign poller"}`+"\n"+
			`{"remote_addr":"192.0.2.1","remote_port":443,"proto":"tcp","score":0.6,"period_s":60,"subscribers":2,"explanation":"bot"}`+"\n"+
			`{"remote_addr":"192.0.2.1","remote_port":443,"proto":"tcp","score":0.8,"period_s":60,"subscribers":3,"explanation":"bot, better window"}`+"\n"+
			`{"remote_addr":"2001:db8::7","remote_port":8080,"proto":"tcp","score":0.5,"explanation":"below threshold"}`+"\n"+
			`{"remote_addr":"203.0.113.5","remote_port":123,"proto":"udp","score":0.99,"suppressed":"ntp","explanation":"ntp"}`+"\n"), 0o644))
	stdout, _, err := ccflow(t, "eval", "--truth", truth, "--candidates", cands, "--json")
	must(err)
	var raw map[string]json.RawMessage
	must(json.Unmarshal([]byte(stdout), &raw))
	for _, k := range []string{"recall", "true_ranks", "false_candidates"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("JSON lacks %q:\n%s", k, stdout)
		}
	}
	var rep evalReport
	must(json.Unmarshal([]byte(stdout), &rep))
	// Truth: 192.0.2.1:443 (found, rank 2, best window 0.8),
	// 192.0.2.9:53/udp (absent), 2001:db8::7:8080 (rank 3, below 0.55).
	if rep.Total != 3 || rep.Found != 1 || rep.Recall < 0.333 || rep.Recall > 0.334 {
		t.Errorf("recall %d/%d = %v", rep.Found, rep.Total, rep.Recall)
	}
	want := map[string][2]float64{"192.0.2.1": {2, 0.8}, "192.0.2.9": {0, 0}, "2001:db8::7": {3, 0.5}}
	for _, tr := range rep.TrueRanks {
		w := want[tr.RemoteAddr.String()]
		if float64(tr.Rank) != w[0] || tr.Score != w[1] {
			t.Errorf("%s: rank %d score %v, want %v", tr.RemoteAddr, tr.Rank, tr.Score, w)
		}
	}
	if len(rep.FalseCandidates) != 1 || rep.FalseCandidates[0].Explanation != "benign poller" {
		t.Errorf("false candidates %+v", rep.FalseCandidates)
	}
	if len(rep.Datasets) != 2 || rep.Datasets[0].Dataset != "a" || rep.Datasets[0].Recall != 0.5 {
		t.Errorf("per data set %+v", rep.Datasets)
	}

	text, _, err := ccflow(t, "eval", "--truth", truth, "--candidates", cands, "--dataset", "b", "--threshold", "0.4")
	must(err)
	for _, s := range []string{"data set b: recall 1/1", "[2001:db8::7]:8080/tcp", "0.900 benign poller"} {
		if !strings.Contains(text, s) {
			t.Errorf("text output lacks %q:\n%s", s, text)
		}
	}
	if _, _, err := ccflow(t, "eval", "--truth", truth, "--candidates", cands, "--dataset", "zzz"); err == nil {
		t.Error("unknown data set accepted")
	}
	must(os.WriteFile(truth, []byte("c2_dst,proto\n1.2.3.4,tcp\n"), 0o644))
	if _, _, err := ccflow(t, "eval", "--truth", truth, "--candidates", cands); err == nil {
		t.Error("truth without dport accepted")
	}
}
