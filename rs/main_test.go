package rs

import (
	"os"
	"testing"
)

// mainEnv makes the test binary act as xvs-rs, so lab tests run the real
// command (a process that exits, under `ip netns exec`) without a go build.
const mainEnv = "XVS_RS_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) == "1" {
		os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}
