package scheduler

import (
	"time"

	"golang.org/x/sys/unix"
)

// threadCPU is the calling thread's CPU time. A Linux guest does not
// count the time its host ran something else (steal) as the thread's.
func threadCPU() time.Duration {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts) != nil {
		return -1
	}
	return time.Duration(ts.Nano())
}
