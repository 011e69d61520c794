//go:build ccflow_testhooks

package privacy

// testHooks is true only in builds with the ccflow_testhooks build tag
// (`go build -tags ccflow_testhooks`, used by the canary test's positive
// control): there, CCFLOW_TEST_PRIVACY_IDENTITY=1 makes New return a stage
// that copies subscriber addresses into the pseudonym fields unchanged.
// Never ship such a build.
const testHooks = true
