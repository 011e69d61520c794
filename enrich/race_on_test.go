//go:build race

package enrich

// raceEnabled: the race detector makes sync.Pool drop items at random, so
// pooled paths allocate under it.
const raceEnabled = true
