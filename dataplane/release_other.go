//go:build !amd64 || race

package dataplane

import "sync/atomic"

// storeRelease is atomic.Store: see release_amd64.go.
func storeRelease(p *atomic.Uint64, v uint64) { p.Store(v) }
