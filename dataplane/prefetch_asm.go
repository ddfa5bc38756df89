//go:build amd64 || arm64

package dataplane

// prefetch asks the CPU to bring the cache line at each address into its
// caches without waiting for it (PREFETCHT0, PRFM PLDL1KEEP). A Go load
// used as a prefetch stalls retirement until the line arrives, so a batch
// of them overlaps only as far as the reorder buffer reaches; a prefetch
// instruction retires at once. The addresses are only hints: they are never
// dereferenced, and a bad one does not fault.
//
//go:noescape
func prefetch(addrs []uintptr)
