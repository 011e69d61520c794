// Package archive reads flow archives (files written by other flow tools)
// into flow.Record values, for replay and evaluation.
//
// Supported formats: Argus "binetflow" CSV (CTU-13), Zeek conn.log (TSV with
// a #fields header), CICFlowMeter CSV, a generic CSV whose columns are named
// by a Mapping, and nfcapd files written by nfdump 1.7 (through
// github.com/phaag/go-nfdump). Text formats may be gzip-compressed; the
// reader detects that from the content, not the file name.
//
// Records carry raw addresses, like the collector's: they must go through the
// privacy stage before they leave the process (privacy invariant P1). Rows
// that cannot be parsed are skipped and counted (Reader.Skipped), never
// fatal, and no error message quotes an address from the file.
package archive

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ccflow/ccflow/flow"
)

// Format names an archive format.
type Format string

// Archive formats.
const (
	FormatBinetflow    Format = "binetflow"
	FormatZeek         Format = "zeek"
	FormatCICFlowMeter Format = "cicflowmeter"
	FormatCSV          Format = "csv"
	FormatNfcapd       Format = "nfcapd"
)

// Formats lists the supported formats, in the order the CLI shows them.
var Formats = []Format{FormatBinetflow, FormatZeek, FormatCICFlowMeter, FormatCSV, FormatNfcapd}

// ParseFormat checks a format name.
func ParseFormat(s string) (Format, error) {
	for _, f := range Formats {
		if string(f) == s {
			return f, nil
		}
	}
	return "", fmt.Errorf("unknown archive format %q (want one of binetflow, zeek, cicflowmeter, csv, nfcapd)", s)
}

// Options tune how archives are read. The zero value is usable.
type Options struct {
	// Mapping names the columns of a generic CSV file (FormatCSV only).
	Mapping Mapping
	// Location interprets timestamps that carry no zone; nil means UTC.
	Location *time.Location
}

// Reader returns the records of one archive in file order (which is not
// necessarily time order). A Reader is not safe for concurrent use.
type Reader interface {
	// Next fills rec with the next record. It returns io.EOF after the
	// last record, and another error only when the archive cannot be read
	// further (a damaged row is skipped, not an error).
	Next(rec *flow.Record) error
	// Label returns the ground-truth label of the record that Next
	// returned last, for formats that carry one (binetflow Label, Zeek
	// label and detailedlabel, CICFlowMeter Label), or "".
	Label() string
	// Skipped returns how many rows were skipped as unparseable so far.
	Skipped() int
	// Close releases the archive.
	Close() error
}

// Open opens the archive at path in the given format.
func Open(path string, format Format, opts Options) (Reader, error) {
	if format == FormatNfcapd {
		return openNfcapd(path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open archive: %w", err)
	}
	r, err := NewReader(f, format, opts)
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &closeReader{Reader: r, c: f}, nil
}

// NewReader reads a text archive (every format but nfcapd) from r, which
// may be gzip-compressed. Closing the Reader does not close r.
func NewReader(r io.Reader, format Format, opts Options) (Reader, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	var gz *gzip.Reader
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		var err error
		if gz, err = gzip.NewReader(br); err != nil {
			return nil, fmt.Errorf("open gzip stream: %w", err)
		}
		br = bufio.NewReaderSize(gz, 1<<16)
	}
	loc := opts.Location
	if loc == nil {
		loc = time.UTC
	}
	var (
		rd  Reader
		err error
	)
	switch format {
	case FormatZeek:
		rd, err = newZeek(br, loc)
	case FormatBinetflow:
		rd, err = newTable(br, ',', binetflowMapping, loc, false)
	case FormatCICFlowMeter:
		rd, err = newTable(br, ',', cicMapping, loc, false)
	case FormatCSV:
		m := opts.Mapping
		if m.Start == "" {
			return nil, errors.New("csv format needs a column mapping with at least start, src and dst (--map)")
		}
		sep := ','
		if m.Sep != 0 {
			sep = m.Sep
		}
		rd, err = newTable(br, sep, m, loc, true)
	case FormatNfcapd:
		return nil, errors.New("nfcapd archives must be opened by path (archive.Open)")
	default:
		return nil, fmt.Errorf("unknown archive format %q", format)
	}
	if err != nil {
		return nil, err
	}
	if gz != nil {
		return &closeReader{Reader: rd, c: gz}, nil
	}
	return rd, nil
}

type closeReader struct {
	Reader
	c io.Closer
}

func (c *closeReader) Close() error {
	err := c.Reader.Close()
	if cerr := c.c.Close(); err == nil {
		err = cerr
	}
	return err
}

// ReadAll reads every record of r; labels[i] is the label of recs[i] when
// withLabels is set (nil otherwise).
func ReadAll(r Reader, withLabels bool) (recs []flow.Record, labels []string, err error) {
	var rec flow.Record
	for {
		rec = flow.Record{}
		if err := r.Next(&rec); err != nil {
			if errors.Is(err, io.EOF) {
				return recs, labels, nil
			}
			return recs, labels, err
		}
		recs = append(recs, rec)
		if withLabels {
			labels = append(labels, r.Label())
		}
	}
}

// trimSpace trims ASCII spaces and tabs.
func trimSpace(s string) string { return strings.Trim(s, " \t\r") }
