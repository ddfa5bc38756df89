//go:build !linux

package scheduler

import "time"

// threadCPU is unknown here: the benchmarks then report wall time only.
func threadCPU() time.Duration { return -1 }
