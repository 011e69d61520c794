package enrich

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// feodoCSV is the layout of abuse.ch's Feodo Tracker CSV blocklist
// (ipblocklist.csv): a commented banner, a commented header, quoted fields,
// and a commented trailer.
const feodoCSV = `################################################################
# abuse.ch Feodo Tracker Botnet C2 IP Blocklist (CSV)          #
# Last updated: 2026-11-20 12:00:00 UTC                        #
#                                                              #
# Terms Of Use: https://feodotracker.abuse.ch/blocklist/       #
################################################################
#
# "first_seen_utc","dst_ip","dst_port","c2_status","last_online","malware"
"2021-01-17 07:44:46","51.178.161.32","4643","online","2026-11-20","Dridex"
"2023-07-05 14:11:38","162.243.103.246","8080","offline","2026-10-02","Emotet"
"2024-02-11 09:00:00","2001:db8:c2::1","443","online","2026-11-19","QakBot"
# Number of entries: 3
`

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestParseIntel(t *testing.T) {
	tests := []struct {
		name    string
		column  string
		in      string
		want    []netip.Prefix
		wantErr string
	}{
		{"plain", "", "# a comment\n\n192.0.2.1\n198.51.100.0/24\n2001:db8::/32\n  203.0.113.7  # trailing comment\n",
			prefixes("192.0.2.1/32", "198.51.100.0/24", "2001:db8::/32", "203.0.113.7/32"), ""},
		{"spamhaus drop", "", "; Spamhaus DROP List 2026/11/20\n1.10.16.0/20 ; SBL256894\n2.56.192.0/22 ; SBL459831\n",
			prefixes("1.10.16.0/20", "2.56.192.0/22"), ""},
		{"crlf and bom", "", "\xef\xbb\xbf192.0.2.1\r\n192.0.2.2\r\n", prefixes("192.0.2.1/32", "192.0.2.2/32"), ""},
		{"host bits masked, mapped unmapped", "", "10.1.2.3/8\n::ffff:192.0.2.9\n::ffff:198.51.100.0/120\n",
			prefixes("10.0.0.0/8", "192.0.2.9/32", "198.51.100.0/24"), ""},
		{"addr:port", "", "192.0.2.1:443\n[2001:db8::1]:8443\n", prefixes("192.0.2.1/32", "2001:db8::1/128"), ""},
		{"bad line", "", "192.0.2.1\nexample.com\n", nil, `line 2: "example.com" is not an address or CIDR`},
		{"zone", "", "fe80::1%eth0\n", nil, "zones are not allowed"},
		{"whole mapped range", "", "::ffff:0:0/96\n", prefixes("0.0.0.0/0"), ""},
		{"feodo", "dst_ip", feodoCSV, prefixes("51.178.161.32/32", "162.243.103.246/32", "2001:db8:c2::1/128"), ""},
		{"feodo by number", "2", feodoCSV, prefixes("51.178.161.32/32", "162.243.103.246/32", "2001:db8:c2::1/128"), ""},
		{"csv plain header", "ip", "id,ip,comment\n1,192.0.2.1,\"a, b\"\n2,,empty skipped\n3,192.0.2.3,\n",
			prefixes("192.0.2.1/32", "192.0.2.3/32"), ""},
		{"csv header repeats commented header", "IP", "# id,ip\nid,ip\n1,192.0.2.1\n", prefixes("192.0.2.1/32"), ""},
		{"threatfox ip:port", "ioc_value", "# \"first_seen_utc\",\"ioc_id\",\"ioc_value\",\"ioc_type\"\n\"2026-11-20 10:00:00\",\"1\",\"192.0.2.50:4444\",\"ip:port\"\n",
			prefixes("192.0.2.50/32"), ""},
		{"csv no such column", "dst_ip", "a,b\n1,2\n", nil, `line 1: no column named "dst_ip"`},
		{"csv short line", "3", "1,192.0.2.1,192.0.2.2\n1,2\n", nil, "line 2: has 2 columns"},
		{"csv bad value", "1", "192.0.2.1\nnope\n", nil, `line 2: "nope"`},
		{"empty list", "", "# nothing listed today\n", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseIntel(strings.NewReader(tt.in), tt.column)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

// TestIntelTable checks that every list containing an address is found,
// nested prefixes included, and that names come in list order.
func TestIntelTable(t *testing.T) {
	names := []string{"drop", "feodo", "local"}
	lists := [][]netip.Prefix{
		prefixes("10.0.0.0/8", "2001:db8::/32"),
		prefixes("10.1.2.3/32", "192.0.2.0/24", "2001:db8:1::1/128"),
		prefixes("10.1.0.0/16", "10.1.2.3/32", "192.0.2.128/25"),
	}
	it := buildIntel(names, lists)
	tests := []struct {
		addr string
		want string
	}{
		{"10.9.9.9", "drop"},
		{"10.1.9.9", "drop,local"},
		{"10.1.2.3", "drop,feodo,local"},
		{"10.1.2.4", "drop,local"},
		{"192.0.2.1", "feodo"},
		{"192.0.2.200", "feodo,local"},
		{"2001:db8::5", "drop"},
		{"2001:db8:1::1", "drop,feodo"},
		{"11.0.0.1", ""},
		{"::ffff:10.1.2.3", "drop,feodo,local"},
	}
	for _, tt := range tests {
		a := netip.MustParseAddr(tt.addr).Unmap()
		if got := *it.lookup(a); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.addr, got, tt.want)
		}
	}
}
