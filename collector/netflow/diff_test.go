package netflow

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	gf "github.com/netsampler/goflow2/v2/decoders/netflow"

	"github.com/ccflow/ccflow/collector/pcap"
)

// The differential test proves the template-compiled decoder equal to
// goflow2 v2.2.6's NetFlow v9/IPFIX decoder: for each datagram both decode
// (with their own template state), goflow2's records are interpreted with
// SetField and the same sampling/boot-time resolution, and the two record
// lists must be equal whenever goflow2 succeeds. The comparison accounts
// for these known, deliberate differences, each of them a goflow2 quirk on
// malformed input:
//
//   - goflow2 reads at most `count` flow sets of a v9 datagram (count is the
//     number of records in RFC 3954); ccflow reads every set. ccflow is
//     given the datagram cut after that many sets.
//   - goflow2 installs templates of zero length and then loops for ever
//     on their data sets; ccflow refuses them. The reference hides them.
//   - goflow2 pads a record whose fixed field runs past the set with a
//     short value; ccflow stops at the last complete record. The reference
//     drops records with short fixed values, and when ccflow reports
//     ErrRecord it also drops a set's last record if it has
//     variable-length fields (a short variable value is invisible in
//     goflow2's output).
//   - goflow2 reads an IPFIX options template withdrawal as a 6-byte
//     header (RFC 7011 section 8.1 gives it 4); datagrams with withdrawals
//     are not compared.

// limitsForDiff lifts the session bounds that goflow2 does not have and
// turns buffering off (goflow2 drops data sets without a template).
func limitsForDiff() Limits {
	l := DefaultLimits()
	l.MaxTemplates = 1 << 20
	l.MaxFields = 65535
	l.TemplateExpiry = 0
	l.PendingBytes = 0
	return l
}

// safeTemplates is goflow2's template store with zero-length templates
// hidden, so that goflow2 does not loop on their data sets. It logs the
// templates it hands out: goflow2 looks one up per data set, in order, and
// a later set of the same datagram may replace it.
type safeTemplates struct {
	gf.NetFlowTemplateSystem
	got []interface{}
}

func fixedSize(fs []gf.Field) (size int, variable bool) {
	for _, f := range fs {
		if f.Length == 0xffff {
			variable = true
		} else {
			size += int(f.Length)
		}
	}
	return size, variable
}

func (s *safeTemplates) GetTemplate(version uint16, domain uint32, id uint16) (interface{}, error) {
	t, err := s.NetFlowTemplateSystem.GetTemplate(version, domain, id)
	if err != nil {
		return t, err
	}
	var fields []gf.Field
	switch t := t.(type) {
	case gf.TemplateRecord:
		fields = t.Fields
	case gf.IPFIXOptionsTemplateRecord:
		fields = append(append(fields, t.Scopes...), t.Options...)
	case gf.NFv9OptionsTemplateRecord:
		fields = append(append(fields, t.Scopes...), t.Options...)
	}
	if n, v := fixedSize(fields); n == 0 && !v {
		return nil, gf.ErrorTemplateNotFound
	}
	s.got = append(s.got, t)
	return t, nil
}

// refRecord is a reference record and whether ccflow may legitimately
// have dropped it (see above).
type refRecord struct {
	Record
	ambiguous bool
}

// reference is goflow2 plus the interpretation shared with the decoder.
type reference struct {
	ts      *safeTemplates
	session *Session // only for its domains (options state)
}

func newReference() *reference {
	return &reference{ts: &safeTemplates{NetFlowTemplateSystem: gf.CreateTemplateSystem()}, session: NewSession(limitsForDiff())}
}

func values(fs []gf.DataField) [][]byte {
	out := make([][]byte, len(fs))
	for i, f := range fs {
		out[i], _ = f.Value.([]byte)
	}
	return out
}

// decode decodes b with goflow2 and interprets the result.
func (r *reference) decode(b []byte, nowMs int64) ([]refRecord, error) {
	var v9 gf.NFv9Packet
	var ipfix gf.IPFIXPacket
	r.ts.got = r.ts.got[:0]
	if err := gf.DecodeMessageVersion(bytes.NewBuffer(b), r.ts, &v9, &ipfix); err != nil {
		return nil, err
	}
	ctx := Record{ReceivedMs: nowMs}
	var sets []interface{}
	if v9.Version == 9 {
		ctx.Version, ctx.Domain, ctx.ExportSec, ctx.SysUptime = 9, v9.SourceId, v9.UnixSeconds, v9.SystemUptime
		sets = v9.FlowSets
	} else {
		ctx.Version, ctx.Domain, ctx.ExportSec = 10, ipfix.ObservationDomainId, ipfix.ExportTime
		sets = ipfix.FlowSets
	}
	var out []refRecord
	next := func() interface{} {
		t := r.ts.got[0]
		r.ts.got = r.ts.got[1:]
		return t
	}
	for _, set := range sets {
		switch set := set.(type) {
		case gf.DataFlowSet:
			tr := next().(gf.TemplateRecord)
			_, variable := fixedSize(tr.Fields)
			d := r.session.domain(ctx.Version, ctx.Domain, true)
			for i, rec := range set.Records {
				x := refRecord{Record: ctx, ambiguous: variable && i == len(set.Records)-1}
				complete := true
				for j, v := range values(rec.Values) {
					f := tr.Fields[j]
					if f.Length != 0xffff && len(v) != int(f.Length) {
						complete = false
					}
					if !rec.Values[j].PenProvided {
						SetField(&x.Record, rec.Values[j].Type, v)
					}
				}
				if complete {
					resolve(&x.Record, d)
					out = append(out, x)
				}
			}
		case gf.OptionsDataFlowSet:
			next()
			d := r.session.domain(ctx.Version, ctx.Domain, true)
			for _, rec := range set.Records {
				o := ctx
				if ctx.Version == 10 {
					for j, v := range values(rec.ScopesValues) {
						if !rec.ScopesValues[j].PenProvided {
							SetField(&o, rec.ScopesValues[j].Type, v)
						}
					}
				}
				for j, v := range values(rec.OptionsValues) {
					if !rec.OptionsValues[j].PenProvided {
						SetField(&o, rec.OptionsValues[j].Type, v)
					}
				}
				r.session.applyOptions(d, &o)
			}
		}
	}
	return out, nil
}

// firstSets returns b cut after its first n flow sets (as goflow2 reads a
// v9 datagram), or b when it has no more than n.
func firstSets(b []byte, n int) []byte {
	off := 20
	for i := 0; i < n; i++ {
		if len(b)-off < 4 {
			return b
		}
		l := int(binary.BigEndian.Uint16(b[off+2:]))
		if l < 4 || off+l >= len(b) {
			return b
		}
		off += l
	}
	return b[:off]
}

// pair decodes datagrams with the decoder and the reference side by side.
type pair struct {
	s   *Session
	ref *reference
}

func newPair() *pair { return &pair{s: NewSession(limitsForDiff()), ref: newReference()} }

// check decodes b with both and fails the test when they disagree. It
// returns the number of records compared.
func (p *pair) check(t *testing.T, b []byte, nowMs int64) int {
	t.Helper()
	in := b
	if len(b) >= 4 && binary.BigEndian.Uint16(b) == 9 {
		in = firstSets(b, int(binary.BigEndian.Uint16(b[2:])))
	}
	withdrawn := p.s.stats.Withdrawn
	got, err := p.s.Decode(in, nowMs, nil)
	want, werr := p.ref.decode(b, nowMs)
	if werr != nil || p.s.stats.Withdrawn != withdrawn {
		return 0
	}
	plain := func(rs []refRecord, dropAmbiguous bool) []Record {
		out := []Record{}
		for _, r := range rs {
			if !(dropAmbiguous && r.ambiguous) {
				out = append(out, r.Record)
			}
		}
		return out
	}
	if got == nil {
		got = []Record{}
	}
	// Plain equality first: cmp.Diff is only for the failure message.
	ref := plain(want, false)
	if !slices.Equal(got, ref) && errors.Is(err, ErrRecord) {
		ref = plain(want, true)
	}
	if !slices.Equal(got, ref) {
		t.Fatalf("records differ (ccflow error: %v) (-ccflow +goflow2):\n%s", err, cmp.Diff(got, ref))
	}
	return len(got)
}

// corpus returns the real softflowd datagrams of a checked-in capture.
func corpus(t testing.TB, file string) [][]byte {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ds, err := pcap.ReadDatagrams(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) == 0 {
		t.Fatal("empty corpus")
	}
	var out [][]byte
	for _, d := range ds {
		out = append(out, d.Payload)
	}
	return out
}

// TestDifferentialCorpus proves the decoder equal to goflow2 on every real
// datagram of the NetFlow v9 and IPFIX corpora, decoded in order.
func TestDifferentialCorpus(t *testing.T) {
	for _, file := range []string{"netflow9.pcap", "ipfix.pcap"} {
		t.Run(file, func(t *testing.T) {
			p := newPair()
			n := 0
			for i, b := range corpus(t, file) {
				n += p.check(t, b, int64(i))
			}
			if n == 0 {
				t.Fatal("no records compared")
			}
			t.Logf("%d records equal", n)
		})
	}
}

// fuzzDifferential primes both decoders with the corpus's first datagram
// (which carries the templates), then compares them on the input.
func fuzzDifferential(f *testing.F, file string) {
	seeds := corpus(f, file)
	for _, b := range seeds {
		f.Add(b)
	}
	for _, b := range syntheticSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p := newPair()
		p.check(t, seeds[0], 0)
		p.check(t, b, 1)
		// The session must stay usable and bounded after any input.
		s := NewSession(DefaultLimits())
		for range 2 {
			_, _ = s.Decode(b, 2, nil)
		}
		if st := s.Stats(); st.Templates > DefaultLimits().MaxTemplates {
			t.Fatalf("%d templates held, limit %d", st.Templates, DefaultLimits().MaxTemplates)
		}
	})
}

// FuzzNetFlow9 fuzzes the decoder from real NetFlow v9 datagrams and
// compares it with goflow2.
func FuzzNetFlow9(f *testing.F) { fuzzDifferential(f, "netflow9.pcap") }

// FuzzIPFIX fuzzes the decoder from real IPFIX datagrams and compares it
// with goflow2.
func FuzzIPFIX(f *testing.F) { fuzzDifferential(f, "ipfix.pcap") }
