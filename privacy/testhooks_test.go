//go:build ccflow_testhooks

package privacy

import (
	"testing"

	"github.com/ccflow/ccflow/flow"
)

// TestIdentityEnvInTaggedBuild runs only with -tags ccflow_testhooks: there
// the environment variable disables pseudonymization, as the pipeline
// canary test's positive control needs.
func TestIdentityEnvInTaggedBuild(t *testing.T) {
	t.Setenv(identityEnv, "1")
	s, _ := newTestStage(t, stageOpts{})
	out := s.Pseudonymize([]flow.Record{rec("192.0.2.7", 80, "198.51.100.9", 443)}, nil)
	if flow.Addr(out[0].Sub) != addr("192.0.2.7") {
		t.Fatalf("%s=1 did not disable pseudonymization in a ccflow_testhooks build", identityEnv)
	}
}
