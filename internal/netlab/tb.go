package netlab

import (
	"fmt"
	"os"
	"sync"
)

// TB is the part of testing.TB the lab uses, so that programs (make demo,
// the benchmarks) can build labs too: *testing.T and *testing.B satisfy it,
// and so does *Script.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Skipf(format string, args ...any)
	Cleanup(func())
	TempDir() string
}

// Script is a TB for programs: Fatalf and Skipf print, run the cleanups and
// exit; Close runs the cleanups at the normal end.
type Script struct {
	mu       sync.Mutex
	cleanups []func()
	dirs     []string
}

// Helper does nothing; it exists to satisfy TB.
func (s *Script) Helper() {}

// Logf prints a line to stdout.
func (s *Script) Logf(format string, args ...any) { fmt.Printf(format+"\n", args...) }

// Fatalf prints the error, cleans up and exits with status 1.
func (s *Script) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "error: "+format+"\n", args...)
	s.Close()
	os.Exit(1)
}

// Skipf prints why the program cannot run, cleans up and exits with status 2.
func (s *Script) Skipf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	s.Close()
	os.Exit(2)
}

// Cleanup registers fn to run at Close, last registered first.
func (s *Script) Cleanup(fn func()) {
	s.mu.Lock()
	s.cleanups = append(s.cleanups, fn)
	s.mu.Unlock()
}

// TempDir returns a new directory removed at Close.
func (s *Script) TempDir() string {
	d, err := os.MkdirTemp("", "xvs-lab-")
	if err != nil {
		s.Fatalf("temp dir: %v", err)
	}
	s.mu.Lock()
	s.dirs = append(s.dirs, d)
	s.mu.Unlock()
	return d
}

// Close runs the cleanups and removes the temp dirs. Safe to call twice.
func (s *Script) Close() {
	s.mu.Lock()
	fns, dirs := s.cleanups, s.dirs
	s.cleanups, s.dirs = nil, nil
	s.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
	for _, d := range dirs {
		os.RemoveAll(d)
	}
}
