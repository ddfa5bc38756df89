//go:build amd64 && !race

package dataplane

import (
	"sync/atomic"
	"unsafe"
)

// storeRelease publishes a slot's control word after its writer filled the
// entry. On amd64 every store already has release order (TSO), so a plain
// aligned store does what atomic.Store's XCHG does here at a fraction of
// the cost: the XCHG also drains the store buffer, which on an insert holds
// the entry's stores still waiting for their cache line. The compiler keeps
// stores in program order. Other architectures, and the race detector, use
// atomic.Store (release_other.go).
func storeRelease(p *atomic.Uint64, v uint64) { *(*uint64)(unsafe.Pointer(p)) = v }
