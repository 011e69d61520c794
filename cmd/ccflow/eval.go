package main

import (
	"bufio"
	"cmp"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ccflow/ccflow/flow"
)

func newEvalCmd() *cobra.Command {
	var (
		truthPath, candPath, dataset string
		asJSON                       bool
	)
	cmd := &cobra.Command{
		Use:   "eval --truth TRUTH.csv --candidates CANDIDATES.jsonl",
		Short: "Evaluate candidates against a truth file of C&C endpoints",
		Long: `eval compares the candidates of a replay (one JSON object per line, as
written by ccflow replay) with a truth file: a CSV with at least the columns
c2_dst, dport and proto (as ../shared/data/truth.csv), and optionally dataset.
An endpoint that appears in several windows counts once, with its best score;
candidates suppressed by an allowlist do not count. Candidates are ranked by
score.

For every data set of the truth file (or only --dataset) it prints the rank and
score of each true endpoint, the recall at the configured threshold
(detect.threshold, or --threshold), and every false candidate with its
explanation. --json prints the same as one JSON object with recall,
true_ranks and false_candidates (over the selected data sets) and a per data
set breakdown.`,
		Example: `  ccflow eval --truth ../shared/data/truth.csv --dataset njrat-zeek --candidates njrat.jsonl
  ccflow eval --truth truth.csv --candidates c.jsonl --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, done, err := loadConfig(cmd)
			if err != nil || done {
				return err
			}
			if truthPath == "" || candPath == "" {
				return errors.New("--truth and --candidates are required")
			}
			truth, err := readTruth(truthPath, dataset)
			if err != nil {
				return err
			}
			cands, err := readCandidates(candPath)
			if err != nil {
				return err
			}
			rep := evaluate(truth, cands, cfg.Detect.Threshold)
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			return rep.print(cmd.OutOrStdout())
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&truthPath, "truth", "", "truth `CSV` with columns c2_dst, dport, proto (and optionally dataset)")
	fs.StringVar(&candPath, "candidates", "", "candidates `JSONL` written by ccflow replay (- for stdin)")
	fs.StringVar(&dataset, "dataset", "", "evaluate only the truth rows of data set `NAME`")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	bindFlag(fs, "threshold", "detect.threshold", "score `THRESHOLD` at which a candidate counts as found")
	return cmd
}

// endpointKey names a remote endpoint.
type endpointKey struct {
	addr  netip.Addr
	port  uint16
	proto flow.IPProto
}

func (k endpointKey) String() string {
	return netip.AddrPortFrom(k.addr, k.port).String() + "/" + k.proto.String()
}

// truthRow is one C&C endpoint of the truth file.
type truthRow struct {
	dataset string
	key     endpointKey
	note    string
}

// readTruth reads the truth CSV; with dataset set, only its rows.
func readTruth(path, dataset string) ([]truthRow, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open truth: %w", err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("read truth header: %w", err)
	}
	col := map[string]int{}
	for i, h := range header {
		col[strings.TrimSpace(h)] = i
	}
	for _, need := range []string{"c2_dst", "dport", "proto"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("%s: truth file has no %s column", path, need)
		}
	}
	get := func(row []string, name string) string {
		if i, ok := col[name]; ok && i < len(row) {
			return strings.TrimSpace(row[i])
		}
		return ""
	}
	var rows []truthRow
	seen := map[truthRow]bool{}
	for line := 2; ; line++ {
		row, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		ds := get(row, "dataset")
		if dataset != "" && ds != dataset {
			continue
		}
		a, err := netip.ParseAddr(get(row, "c2_dst"))
		if err != nil {
			return nil, fmt.Errorf("%s line %d: bad c2_dst: %w", path, line, err)
		}
		port, err := strconv.ParseUint(get(row, "dport"), 10, 16)
		if err != nil {
			return nil, fmt.Errorf("%s line %d: bad dport: %w", path, line, err)
		}
		proto, err := flow.ParseIPProto(get(row, "proto"))
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, line, err)
		}
		t := truthRow{dataset: ds, key: endpointKey{a.Unmap(), uint16(port), proto}}
		if seen[t] {
			continue // one endpoint, several infected hosts
		}
		seen[t] = true
		t.note = get(row, "note")
		rows = append(rows, t)
	}
	if len(rows) == 0 {
		if dataset != "" {
			return nil, fmt.Errorf("%s: no rows for data set %q", path, dataset)
		}
		return nil, fmt.Errorf("%s: no rows", path)
	}
	return rows, nil
}

// readCandidates reads candidate JSON lines: one endpoint each, its best
// window; suppressed ones are skipped. The result is ranked by score.
func readCandidates(path string) ([]flow.Candidate, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("open candidates: %w", err)
		}
		defer f.Close()
		r = f
	}
	best := map[endpointKey]flow.Candidate{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 1<<24)
	for line := 1; sc.Scan(); line++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var c flow.Candidate
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, line, err)
		}
		if c.Suppressed != "" {
			continue
		}
		k := endpointKey{c.RemoteAddr.Unmap(), c.RemotePort, c.Proto}
		if o, ok := best[k]; !ok || c.Score > o.Score {
			best[k] = c
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read candidates: %w", err)
	}
	out := make([]flow.Candidate, 0, len(best))
	for _, c := range best {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b flow.Candidate) int {
		if c := cmp.Compare(b.Score, a.Score); c != 0 {
			return c
		}
		return a.RemoteAddr.Compare(b.RemoteAddr)
	})
	return out, nil
}

// evalReport is the result of ccflow eval; its JSON form is the interface
// later tooling reads.
type evalReport struct {
	Threshold float64 `json:"threshold"`
	// Recall, TrueRanks and FalseCandidates cover every selected data set.
	Recall          float64          `json:"recall"`
	Found           int              `json:"found"`
	Total           int              `json:"total"`
	TrueRanks       []trueRank       `json:"true_ranks"`
	FalseCandidates []flow.Candidate `json:"false_candidates"`
	Candidates      int              `json:"candidates"`
	Datasets        []datasetReport  `json:"datasets"`
}

// datasetReport is the evaluation of one data set.
type datasetReport struct {
	Dataset         string           `json:"dataset"`
	Recall          float64          `json:"recall"`
	Found           int              `json:"found"`
	Total           int              `json:"total"`
	TrueRanks       []trueRank       `json:"true_ranks"`
	FalseCandidates []flow.Candidate `json:"false_candidates"`
}

// trueRank is where one true C&C endpoint ranks among the candidates.
type trueRank struct {
	Dataset    string       `json:"dataset,omitempty"`
	RemoteAddr netip.Addr   `json:"remote_addr"`
	RemotePort uint16       `json:"remote_port"`
	Proto      flow.IPProto `json:"proto"`
	// Rank is 1-based among all candidates, 0 when absent.
	Rank        int     `json:"rank"`
	Score       float64 `json:"score"`
	Found       bool    `json:"found"`
	PeriodS     float64 `json:"period_s,omitempty"`
	Subscribers int     `json:"subscribers,omitempty"`
	Note        string  `json:"note,omitempty"`
}

func evaluate(truth []truthRow, cands []flow.Candidate, threshold float64) evalReport {
	rank := map[endpointKey]int{}
	for i, c := range cands {
		rank[endpointKey{c.RemoteAddr.Unmap(), c.RemotePort, c.Proto}] = i + 1
	}
	rep := evalReport{Threshold: threshold, Candidates: len(cands), TrueRanks: []trueRank{}, FalseCandidates: []flow.Candidate{}}
	var order []string
	byDS := map[string][]truthRow{}
	for _, t := range truth {
		if _, ok := byDS[t.dataset]; !ok {
			order = append(order, t.dataset)
		}
		byDS[t.dataset] = append(byDS[t.dataset], t)
	}
	allTrue := map[endpointKey]bool{}
	for _, t := range truth {
		allTrue[t.key] = true
	}
	for _, ds := range order {
		d := datasetReport{Dataset: ds, TrueRanks: []trueRank{}, FalseCandidates: []flow.Candidate{}}
		isTrue := map[endpointKey]bool{}
		for _, t := range byDS[ds] {
			isTrue[t.key] = true
			tr := trueRank{Dataset: ds, RemoteAddr: t.key.addr, RemotePort: t.key.port, Proto: t.key.proto, Note: t.note}
			if r := rank[t.key]; r > 0 {
				c := cands[r-1]
				tr.Rank, tr.Score, tr.PeriodS, tr.Subscribers = r, c.Score, c.PeriodS, c.Subscribers
				tr.Found = c.Score >= threshold
			}
			if tr.Found {
				d.Found++
			}
			d.Total++
			d.TrueRanks = append(d.TrueRanks, tr)
		}
		for _, c := range cands {
			if c.Score >= threshold && !isTrue[endpointKey{c.RemoteAddr.Unmap(), c.RemotePort, c.Proto}] {
				d.FalseCandidates = append(d.FalseCandidates, c)
			}
		}
		d.Recall = float64(d.Found) / float64(d.Total)
		rep.Found += d.Found
		rep.Total += d.Total
		rep.TrueRanks = append(rep.TrueRanks, d.TrueRanks...)
		rep.Datasets = append(rep.Datasets, d)
	}
	for _, c := range cands {
		if c.Score >= threshold && !allTrue[endpointKey{c.RemoteAddr.Unmap(), c.RemotePort, c.Proto}] {
			rep.FalseCandidates = append(rep.FalseCandidates, c)
		}
	}
	rep.Recall = float64(rep.Found) / float64(max(1, rep.Total))
	return rep
}

func (rep *evalReport) print(w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "%d candidates (one per endpoint, best window), threshold %.2f\n", rep.Candidates, rep.Threshold)
	for _, d := range rep.Datasets {
		name := d.Dataset
		if name == "" {
			name = "(all rows)"
		}
		fmt.Fprintf(bw, "\ndata set %s: recall %d/%d = %.2f\n", name, d.Found, d.Total, d.Recall)
		tw := tabwriter.NewWriter(bw, 2, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  endpoint\trank\tscore\tperiod_s\tsubscribers\tfound")
		for _, t := range d.TrueRanks {
			r := "-"
			if t.Rank > 0 {
				r = strconv.Itoa(t.Rank)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%.3f\t%.2f\t%d\t%v\n", endpointKey{t.RemoteAddr, t.RemotePort, t.Proto}, r, t.Score, t.PeriodS, t.Subscribers, t.Found)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(bw, "  false candidates: %d\n", len(d.FalseCandidates))
		for _, c := range d.FalseCandidates {
			fmt.Fprintf(bw, "    %.3f %s\n", c.Score, c.Explanation)
		}
	}
	if len(rep.Datasets) > 1 {
		fmt.Fprintf(bw, "\noverall: recall %d/%d = %.2f, %d false candidates\n", rep.Found, rep.Total, rep.Recall, len(rep.FalseCandidates))
	}
	return bw.Flush()
}
