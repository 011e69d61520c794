package sim

import (
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
)

// TruthHeader is the header of the truth CSV, the format `ccflow eval`
// reads (like the shared data sets' truth.csv).
var TruthHeader = []string{"dataset", "infected_src", "c2_dst", "dport", "proto", "note"}

// BenignHeader is the header of the benign-services CSV.
var BenignHeader = []string{"dataset", "kind", "dst", "dport", "proto", "note"}

// WriteTruth writes the botnets as truth CSV: one row per infected
// subscriber and C&C endpoint. With withSubscribers false the infected_src
// column is left empty (the simulated subscribers are documentation-range
// addresses, so writing them is harmless, but a truth file need not hold
// subscriber addresses at all).
func (s *Simulator) WriteTruth(w io.Writer, dataset string, withSubscribers bool) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(TruthHeader); err != nil {
		return fmt.Errorf("write truth: %w", err)
	}
	for _, b := range s.Botnets() {
		note := fmt.Sprintf("simulated botnet %d: %d infected, period %s, jitter %g%%, missed beats %g%%",
			b.ID, len(b.Infected), b.Period, b.Jitter*100, b.Missed*100)
		for _, src := range b.Infected {
			infected := ""
			if withSubscribers {
				infected = src.String()
			}
			row := []string{dataset, infected, b.C2.String(), strconv.Itoa(int(b.Service.Port)), protoName(b.Service.Proto), note}
			if err := cw.Write(row); err != nil {
				return fmt.Errorf("write truth: %w", err)
			}
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("write truth: %w", err)
	}
	return nil
}

// WriteBenign writes the benign high-fan-in services (NTP servers, update
// servers, DNS resolvers) as CSV with BenignHeader.
func (s *Simulator) WriteBenign(w io.Writer, dataset string) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(BenignHeader); err != nil {
		return fmt.Errorf("write benign services: %w", err)
	}
	for _, b := range s.Benign() {
		row := []string{dataset, b.Kind, b.Addr.String(), strconv.Itoa(int(b.Service.Port)), protoName(b.Service.Proto), b.Note}
		if err := cw.Write(row); err != nil {
			return fmt.Errorf("write benign services: %w", err)
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("write benign services: %w", err)
	}
	return nil
}
