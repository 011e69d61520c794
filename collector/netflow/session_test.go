package netflow

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	nt "github.com/ccflow/ccflow/collector/netflow/netflowtest"
)

// Field specifiers used by the tests (IPFIX IE numbers).
var (
	fSrc4    = nt.Field{Type: 8, Length: 4}
	fDst4    = nt.Field{Type: 12, Length: 4}
	fSrc6    = nt.Field{Type: 27, Length: 16}
	fOctets4 = nt.Field{Type: 1, Length: 4}
	fOctets8 = nt.Field{Type: 1, Length: 8}
	fPkts4   = nt.Field{Type: 2, Length: 4}
	fDport   = nt.Field{Type: 11, Length: 2}
)

// syntheticSeeds are builder-made datagrams that reach the features the
// softflowd corpus does not use; the fuzz targets start from them too.
func syntheticSeeds() [][]byte {
	return [][]byte{
		varLenMessage(),
		optionsMessage(10),
		optionsMessage(9),
		nt.IPFIX(1, 1000).Data(400, nt.Record(nt.Addr("192.0.2.1"))).Template(400, fSrc4).Bytes(),
		nt.IPFIX(1, 1000).Template(401, fSrc4).Withdraw(401, false).Data(401, nt.Addr("192.0.2.1")).Bytes(),
	}
}

// varLenMessage has variable-length fields (short and long prefixes), an
// enterprise field with the type number of octetDeltaCount, and a
// reduced-size octet count.
func varLenMessage() []byte {
	long := []byte(strings.Repeat("x", 300))
	return nt.IPFIX(7, 1700000000).
		Template(300,
			fSrc4,
			nt.Field{Type: 82, Length: nt.VarLen}, // interfaceName
			nt.Field{Type: 1, Length: 4, PEN: 9},  // enterprise 9, type 1: not octetDeltaCount
			nt.Field{Type: 12, Length: nt.VarLen}, // destinationIPv4Address, variable-length encoded
			nt.Field{Type: 1, Length: 3},          // octetDeltaCount, reduced to 3 bytes
			nt.Field{Type: 2, Length: 4},
		).
		Data(300,
			nt.Record(nt.Addr("192.0.2.1"), nt.Var([]byte("eth0")), nt.U32(111), nt.Var(nt.Addr("198.51.100.1")), []byte{0, 1, 0}, nt.U32(3)),
			nt.Record(nt.Addr("192.0.2.2"), nt.Var(long), nt.U32(222), nt.Var(nt.Addr("198.51.100.2")), []byte{1, 0, 0}, nt.U32(4)),
		).Bytes()
}

// optionsMessage announces sampler/selector rates in options data and has
// data records that name them.
func optionsMessage(version uint16) []byte {
	if version == 9 {
		return nt.V9(5, 1700000000, 50000).
			OptionsTemplate(256, []nt.Field{{Type: 1, Length: 4}}, []nt.Field{{Type: 48, Length: 1}, {Type: 50, Length: 4}}).
			Data(256, nt.Record(nt.U32(0), nt.U8(2), nt.U32(1000)), nt.Record(nt.U32(0), nt.U8(3), nt.U32(64))).
			Template(260, fSrc4, fDst4, fOctets4, fPkts4, nt.Field{Type: 48, Length: 1}).
			Data(260, nt.Record(nt.Addr("192.0.2.1"), nt.Addr("198.51.100.1"), nt.U32(100), nt.U32(1), nt.U8(3)),
				nt.Record(nt.Addr("192.0.2.2"), nt.Addr("198.51.100.2"), nt.U32(200), nt.U32(2), nt.U8(9))).
			Bytes()
	}
	return nt.IPFIX(5, 1700000000).
		OptionsTemplate(256, []nt.Field{{Type: 302, Length: 4}}, []nt.Field{{Type: 305, Length: 4}, {Type: 306, Length: 4}}).
		Data(256, nt.Record(nt.U32(7), nt.U32(1), nt.U32(511))).
		Template(260, fSrc4, fDst4, fOctets4, fPkts4, nt.Field{Type: 302, Length: 4}).
		Data(260, nt.Record(nt.Addr("192.0.2.1"), nt.Addr("198.51.100.1"), nt.U32(100), nt.U32(1), nt.U32(7))).
		Bytes()
}

func decode(t *testing.T, s *Session, b []byte, nowMs int64) ([]Record, error) {
	t.Helper()
	return s.Decode(b, nowMs, nil)
}

func TestVariableLengthAndEnterpriseFields(t *testing.T) {
	s := NewSession(DefaultLimits())
	recs, err := decode(t, s, varLenMessage(), 1)
	if err != nil {
		t.Fatal(err)
	}
	type got struct {
		Src, Dst        [4]byte
		Octets, Packets uint64
	}
	var g []got
	for _, r := range recs {
		g = append(g, got{r.SrcV4, r.DstV4, r.Octets, r.Packets})
	}
	want := []got{
		{[4]byte{192, 0, 2, 1}, [4]byte{198, 51, 100, 1}, 256, 3},
		{[4]byte{192, 0, 2, 2}, [4]byte{198, 51, 100, 2}, 65536, 4},
	}
	if diff := cmp.Diff(g, want); diff != "" {
		t.Errorf("records (-got +want):\n%s", diff)
	}
}

func TestOptionsSampling(t *testing.T) {
	tests := []struct {
		name    string
		version uint16
		want    []uint32
	}{
		// v9: records name sampler 3 (1:64) and sampler 9 (unknown: the
		// domain's last announced rate, 1:64).
		{"netflow9 sampler ids", 9, []uint32{64, 64}},
		// IPFIX: selector 7 samples 1 packet in every 1+511.
		{"ipfix selector", 10, []uint32{512}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs, err := decode(t, NewSession(DefaultLimits()), optionsMessage(tt.version), 1)
			if err != nil {
				t.Fatal(err)
			}
			var got []uint32
			for _, r := range recs {
				got = append(got, r.SamplingRate)
			}
			if diff := cmp.Diff(got, tt.want); diff != "" {
				t.Errorf("sampling rates (-got +want):\n%s", diff)
			}
		})
	}
}

func TestSamplerLookup(t *testing.T) {
	// Sampler 2 is 1:1000 and sampler 3 1:64; a record naming sampler 2
	// gets 1000 although 64 was announced last.
	b := nt.V9(5, 1700000000, 50000).
		OptionsTemplate(256, []nt.Field{{Type: 1, Length: 4}}, []nt.Field{{Type: 48, Length: 1}, {Type: 50, Length: 4}}).
		Data(256, nt.Record(nt.U32(0), nt.U8(2), nt.U32(1000)), nt.Record(nt.U32(0), nt.U8(3), nt.U32(64))).
		Template(260, fSrc4, nt.Field{Type: 48, Length: 1}).
		Data(260, nt.Record(nt.Addr("192.0.2.1"), nt.U8(2))).Bytes()
	recs, err := decode(t, NewSession(DefaultLimits()), b, 1)
	if err != nil || len(recs) != 1 || recs[0].SamplingRate != 1000 {
		t.Fatalf("got %+v, %v; want one record at 1:1000", recs, err)
	}
}

func TestDataBeforeTemplate(t *testing.T) {
	s := NewSession(DefaultLimits())
	data := nt.IPFIX(1, 1000).Data(300, nt.Record(nt.Addr("192.0.2.1"), nt.U32(10)), nt.Record(nt.Addr("192.0.2.2"), nt.U32(20))).Bytes()
	recs, err := decode(t, s, data, 1)
	if err != nil || len(recs) != 0 {
		t.Fatalf("data without template: %d records, %v", len(recs), err)
	}
	if st := s.Stats(); st.Misses != 1 {
		t.Fatalf("misses = %d, want 1", st.Misses)
	}
	recs, err = decode(t, s, nt.IPFIX(1, 1001).Template(300, fSrc4, fOctets4).Bytes(), 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[1].Octets != 20 || recs[0].ExportSec != 1000 || recs[0].ReceivedMs != 1 {
		t.Fatalf("released records = %+v", recs)
	}
	if st := s.Stats(); st.Released != 1 || st.Dropped != 0 {
		t.Fatalf("stats = %+v", st)
	}
	// Same datagram, data first: released at the end of the datagram.
	s = NewSession(DefaultLimits())
	b := nt.IPFIX(1, 1000).Data(300, nt.Record(nt.Addr("192.0.2.1"), nt.U32(10))).Template(300, fSrc4, fOctets4).Bytes()
	if recs, err := decode(t, s, b, 1); err != nil || len(recs) != 1 {
		t.Fatalf("data before template in one datagram: %d records, %v", len(recs), err)
	}
}

func TestPendingBounds(t *testing.T) {
	lim := DefaultLimits()
	lim.PendingBytes = 100
	lim.PendingSets = 3
	lim.PendingAge = time.Second
	s := NewSession(lim)
	rec := nt.Record(nt.Addr("192.0.2.1"), nt.U32(10))
	for i := range 5 {
		_, _ = decode(t, s, nt.IPFIX(1, 1000).Data(300, rec, rec).Bytes(), int64(i))
	}
	if st := s.Stats(); st.Dropped != 2 || len(s.pending.sets) != 3 {
		t.Fatalf("after 5 sets with room for 3: dropped %d, held %d", st.Dropped, len(s.pending.sets))
	}
	// A set longer than the buffer is dropped at once.
	big := make([][]byte, 20)
	for i := range big {
		big[i] = rec
	}
	_, _ = decode(t, s, nt.IPFIX(1, 1000).Data(300, big...).Bytes(), 5)
	if st := s.Stats(); st.Dropped != 3 {
		t.Fatalf("dropped = %d, want 3", st.Dropped)
	}
	// Sets older than PendingAge are dropped when the template comes.
	recs, _ := decode(t, s, nt.IPFIX(1, 1000).Template(300, fSrc4, fOctets4).Bytes(), 5000)
	if st := s.Stats(); len(recs) != 0 || st.Dropped != 6 {
		t.Fatalf("old sets: %d records, %d dropped; want 0, 6", len(recs), st.Dropped)
	}
	// Buffering off.
	lim.PendingBytes = 0
	s = NewSession(lim)
	_, _ = decode(t, s, nt.IPFIX(1, 1000).Data(300, rec).Bytes(), 1)
	if st := s.Stats(); st.Dropped != 1 || st.Misses != 1 {
		t.Fatalf("buffering off: %+v", st)
	}
}

func TestTemplateRefresh(t *testing.T) {
	s := NewSession(DefaultLimits())
	rec1 := nt.Record(nt.Addr("192.0.2.1"), nt.Addr("198.51.100.1"), nt.U32(1500))
	recs, _ := decode(t, s, nt.IPFIX(1, 1000).Template(300, fSrc4, fDst4, fOctets4).Data(300, rec1).Bytes(), 1)
	if len(recs) != 1 || recs[0].Octets != 1500 {
		t.Fatalf("first layout: %+v", recs)
	}
	rec2 := nt.Record(nt.U64(1<<40), nt.Addr("2001:db8::1"), nt.U16(443))
	recs, _ = decode(t, s, nt.IPFIX(1, 1001).Template(300, fOctets8, fSrc6, fDport).Data(300, rec2).Bytes(), 2)
	if len(recs) != 1 || recs[0].Octets != 1<<40 || recs[0].DstPort != 443 || recs[0].HasField(FieldSrcV4) || !recs[0].HasField(FieldSrcV6) {
		t.Fatalf("second layout: %+v", recs)
	}
	if st := s.Stats(); st.Templates != 1 {
		t.Fatalf("templates = %d, want 1", st.Templates)
	}
}

func TestWithdrawal(t *testing.T) {
	s := NewSession(DefaultLimits())
	_, _ = decode(t, s, nt.IPFIX(1, 1000).Template(300, fSrc4).Template(301, fSrc4).Bytes(), 1)
	_, _ = decode(t, s, nt.IPFIX(1, 1000).Withdraw(300, false).Bytes(), 2)
	if st := s.Stats(); st.Templates != 1 || st.Withdrawn != 1 {
		t.Fatalf("after withdrawing one: %+v", st)
	}
	_, _ = decode(t, s, nt.IPFIX(1, 1000).Withdraw(2, false).Bytes(), 3)
	if st := s.Stats(); st.Templates != 0 {
		t.Fatalf("after withdrawing all: %+v", st)
	}
}

func TestTemplateExpiry(t *testing.T) {
	lim := DefaultLimits()
	lim.TemplateExpiry = time.Minute
	s := NewSession(lim)
	_, _ = decode(t, s, nt.IPFIX(1, 1000).Template(300, fSrc4).Bytes(), 0)
	data := nt.IPFIX(1, 1000).Data(300, nt.Addr("192.0.2.1")).Bytes()
	if recs, _ := decode(t, s, data, 59_000); len(recs) != 1 {
		t.Fatal("template expired too early")
	}
	if recs, _ := decode(t, s, data, 61_000); len(recs) != 0 {
		t.Fatal("template did not expire")
	}
	if st := s.Stats(); st.Expired != 1 || st.Templates != 0 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestMalformed(t *testing.T) {
	good := nt.IPFIX(1, 1000).Template(300, fSrc4, fOctets4).Data(300, nt.Record(nt.Addr("192.0.2.1"), nt.U32(1))).Bytes()
	lim := DefaultLimits()
	lim.MaxTemplates = 2
	lim.MaxFields = 8
	many := nt.IPFIX(1, 1000)
	for i := range 3 {
		many.Template(uint16(300+i), fSrc4)
	}
	tests := []struct {
		name    string
		b       []byte
		want    error
		records int
	}{
		{"empty", nil, ErrShort, 0},
		{"wrong version", append([]byte{0, 8}, good[2:]...), ErrVersion, 0},
		{"short ipfix header", good[:15], ErrShort, 0},
		{"short v9 header", nt.V9(1, 1, 1).Bytes()[:19], ErrShort, 0},
		{"length beyond datagram", good[:len(good)-3], ErrLength, 0},
		{"empty data set without template", nt.IPFIX(1, 1).Set(300, nil).Bytes(), nil, 0},
		{"set length below 4", append(nt.V9(1, 1, 1).Bytes(), 1, 44, 0, 2), ErrSet, 0},
		{"set header cut", append(nt.V9(1, 1, 1).Bytes(), 1, 44), ErrShort, 0},
		{"reserved set id", nt.IPFIX(1, 1).Set(5, []byte{1, 2, 3, 4}).Bytes(), ErrSet, 0},
		{"ipfix template without fields is a withdrawal", nt.IPFIX(1, 1).Template(300).Bytes(), nil, 0},
		{"v9 template without fields", nt.V9(1, 1, 1).Template(300).Bytes(), ErrZeroTemplate, 0},
		{"zero-length template", nt.V9(1, 1, 1).Template(300, nt.Field{Type: 8, Length: 0}).Bytes(), ErrZeroTemplate, 0},
		{"template id below 256", nt.IPFIX(1, 1).Template(255, fSrc4).Bytes(), ErrTemplate, 0},
		{"too many fields", nt.IPFIX(1, 1).Template(300, fSrc4, fSrc4, fSrc4, fSrc4, fSrc4, fSrc4, fSrc4, fSrc4, fSrc4).Bytes(), ErrTemplate, 0},
		{"template flood", many.Bytes(), ErrTemplateLimit, 0},
		{"truncated template", nt.IPFIX(1, 1).Set(2, []byte{1, 44, 0, 3, 0, 8, 0, 4}).Bytes(), ErrTemplate, 0},
		{"record overruns set", nt.IPFIX(1, 1).Template(300, nt.Field{Type: 82, Length: nt.VarLen}).Data(300, []byte{9, 'a'}).Bytes(), ErrRecord, 0},
		{"options scope count above field count", nt.IPFIX(1, 1).Set(3, []byte{1, 44, 0, 1, 0, 2, 0, 8, 0, 4}).Bytes(), ErrTemplate, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs, err := decode(t, NewSession(lim), tt.b, 1)
			if !errors.Is(err, tt.want) || len(recs) != tt.records {
				t.Errorf("Decode = %d records, %v; want %d, %v", len(recs), err, tt.records, tt.want)
			}
		})
	}
}

func TestSteadyStateAllocs(t *testing.T) {
	for _, file := range []string{"netflow9.pcap", "ipfix.pcap"} {
		t.Run(file, func(t *testing.T) {
			dgrams := corpus(t, file)
			s := NewSession(DefaultLimits())
			out := make([]Record, 0, 64)
			for _, b := range dgrams {
				out, _ = s.Decode(b, 1, out[:0])
			}
			// Every datagram, including those that refresh templates,
			// decodes without allocating once the templates are known.
			n := testing.AllocsPerRun(20, func() {
				for _, b := range dgrams {
					out, _ = s.Decode(b, 1, out[:0])
				}
			})
			if n != 0 {
				t.Errorf("%.1f allocations per pass over %d datagrams, want 0", n, len(dgrams))
			}
		})
	}
}

func TestSyntheticDifferential(t *testing.T) {
	for i, b := range syntheticSeeds() {
		p := newPair()
		p.check(t, b, int64(i))
	}
}
