// Package testenv gives tests access to the real components they need
// (external tools, services, the shared data sets) with one rule: a test that
// cannot find what it needs skips on a developer's machine but fails in CI
// (when the CI environment variable is set), so CI never passes by skipping.
package testenv

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// InCI reports whether the tests run in CI (CI is set and not "false").
func InCI() bool {
	v := os.Getenv("CI")
	return v != "" && v != "false" && v != "0"
}

// Missing skips the test outside CI and fails it in CI, with the reason.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("required test component missing in CI: "+format, args...)
	}
	t.Skipf("skipping (set CI=1 to make this a failure): "+format, args...)
}

// Tool returns the path of an external program, or handles it as Missing.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "program %s not found in PATH (.ci/run installs it)", name)
	}
	return p
}

// Root returns the repository root (the directory holding go.mod).
func Root(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// Data returns the path of a file or directory under the shared data sets
// (../shared/data next to the repository, or $CCFLOW_TEST_DATA). The data
// sets are part of the project's test fixtures: a missing one always fails
// the test, in CI or not.
func Data(t testing.TB, rel ...string) string {
	t.Helper()
	dir := os.Getenv("CCFLOW_TEST_DATA")
	if dir == "" {
		dir = filepath.Join(Root(t), "..", "shared", "data")
	}
	p := filepath.Join(append([]string{dir}, rel...)...)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("shared test data missing: %v (set CCFLOW_TEST_DATA to the data directory)", err)
	}
	return p
}

// Service returns the address in environment variable env (for example
// CCFLOW_TEST_KAFKA) after checking that it accepts TCP connections; when
// unset or unreachable it is handled as Missing.
func Service(t testing.TB, env string) string {
	t.Helper()
	addr := os.Getenv(env)
	if addr == "" {
		Missing(t, "%s is not set", env)
	}
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		Missing(t, "%s=%s is unreachable: %v", env, addr, err)
	}
	_ = c.Close()
	return addr
}
