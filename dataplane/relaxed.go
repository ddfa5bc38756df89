//go:build !race

package dataplane

// storeRelaxed stores v without a locked instruction. Go's atomic.Store is an
// XCHG on amd64 (sequentially consistent, ~20 cycles); the conn table writes
// a slot's five key words while it owns the slot, between a CAS and an
// atomic store of the control word that already order them for readers.
// Plain aligned 8-byte stores are single-copy atomic on the architectures
// Go supports with 64-bit words, and the compiler does not move them across
// the surrounding atomics. Under the race detector this is an atomic store
// (relaxed_race.go) so that the detector sees the protocol.
func storeRelaxed(p *uint64, v uint64) { *p = v }
