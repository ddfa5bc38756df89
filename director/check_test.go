package director_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigTestCorpus runs xvsd -t on every config of the parser's corpus
// (configs as the LVS tutorials write them): each must be accepted, and a
// broken one refused with file:line.
func TestConfigTestCorpus(t *testing.T) {
	files, err := filepath.Glob("../config/testdata/corpus/*.conf")
	if err != nil || len(files) < 10 {
		t.Fatalf("corpus: %v files, err %v", len(files), err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			out, err := exec.Command(xvsdBin, "-t", "-f", f).CombinedOutput()
			if err != nil {
				t.Fatalf("xvsd -t %s: %v\n%s", f, err, out)
			}
			if !strings.Contains(string(out), "configuration OK") {
				t.Fatalf("xvsd -t %s printed %q", f, out)
			}
		})
	}
	bad, _ := filepath.Glob("../config/testdata/bad/*.conf")
	if len(bad) == 0 {
		t.Fatal("no bad configs to refuse")
	}
	for _, f := range bad {
		out, err := exec.Command(xvsdBin, "-t", "-f", f).CombinedOutput()
		if err == nil {
			t.Errorf("xvsd -t accepted the broken %s:\n%s", f, out)
			continue
		}
		if !strings.Contains(string(out), ".conf:") {
			t.Errorf("xvsd -t %s: no file:line in %q", f, out)
		}
	}
}
