//go:build race

package dataplane

import "sync/atomic"

// storeRelaxed is atomic under the race detector: see relaxed.go.
func storeRelaxed(p *uint64, v uint64) { atomic.StoreUint64(p, v) }
