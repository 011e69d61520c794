package detect

// SetAllowlist replaces the allowlist from the next evaluation on (the
// SIGHUP reload of ccflow run and detect): every endpoint's cached verdict
// is dropped so that the new rules apply to endpoints already tracked. Like
// every Detector method it must be called from the goroutine that owns the
// detector.
func (d *Detector) SetAllowlist(a *Allowlist) {
	if a == nil {
		a = NewAllowlist()
	}
	d.allow = a
	d.allowTexts = d.allowTexts[:0]
	for i := range d.eps {
		d.eps[i].allowed = 0
	}
}
