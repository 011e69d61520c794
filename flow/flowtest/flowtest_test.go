package flowtest

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ccflow/ccflow/flow"
)

func TestDeterministic(t *testing.T) {
	for _, o := range []Options{{}, {Uniform: true}} {
		a, b := New(3, o).Flows(5000), New(3, o).Flows(5000)
		if diff := cmp.Diff(a, b); diff != "" {
			t.Errorf("uniform=%v: same seed, different flows:\n%s", o.Uniform, diff)
		}
	}
}

// TestSessions checks the shape of the default population: connections
// are two flows (request, then response) of one subscriber, and
// subscribers repeat within a batch far more than uniform draws would.
func TestSessions(t *testing.T) {
	flows := New(4, Options{}).Flows(65536)
	for i := 0; i+1 < len(flows); i += 2 {
		up, dn := &flows[i], &flows[i+1]
		if up.Kind != flow.KindSubscriber || dn.Kind != flow.KindSubscriber {
			continue
		}
		if up.Direction != flow.DirOutbound || dn.Direction != flow.DirInbound || up.Sub != dn.Sub ||
			up.Remote != dn.Remote || up.SubPort != dn.SubPort || up.RemotePort != dn.RemotePort || up.TimeEndMs != dn.TimeEndMs {
			t.Fatalf("flows %d and %d are not one connection:\n%+v\n%+v", i, i+1, *up, *dn)
		}
	}
	perSub := func(flows []flow.Pseudo) float64 {
		subs := map[flow.Pseudonym]bool{}
		for i := range flows {
			subs[flows[i].Sub] = true
		}
		return float64(len(flows)) / float64(len(subs))
	}
	sessions, uniform := perSub(flows), perSub(New(4, Options{Uniform: true}).Flows(65536))
	t.Logf("flows per subscriber in 64k flows: sessions %.1f, uniform %.1f", sessions, uniform)
	if sessions < 2*uniform {
		t.Errorf("sessions give %.1f flows per subscriber, uniform %.1f", sessions, uniform)
	}
}
