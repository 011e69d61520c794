package detect_test

import (
	"slices"

	"github.com/ccflow/ccflow/flow"
)

func slicesSortStable(fs []flow.Pseudo) {
	slices.SortStableFunc(fs, func(a, b flow.Pseudo) int {
		switch {
		case a.TimeStartMs < b.TimeStartMs:
			return -1
		case a.TimeStartMs > b.TimeStartMs:
			return 1
		}
		return 0
	})
}
