package privacy

// SetIdentityForTest disables pseudonymization of s, for the positive
// control of the canary tests in this directory. It exists only in this
// package's test binaries; binaries reach the same mode only when built
// with the ccflow_testhooks tag (see testhooks_on.go).
func SetIdentityForTest(s *Stage) { s.identity = true }
