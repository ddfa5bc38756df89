//go:build !amd64 && !arm64

package dataplane

// prefetch is a no-op where xvs has no prefetch instruction.
func prefetch(addrs []uintptr) {}
