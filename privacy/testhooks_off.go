//go:build !ccflow_testhooks

package privacy

// testHooks is false in production builds: the CCFLOW_TEST_PRIVACY_IDENTITY
// variable has no effect and the identity mode is unreachable (the compiler
// removes it).
const testHooks = false
