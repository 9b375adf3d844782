//go:build unix

package webhook_test

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time (user and system, all threads) this
// process has used, for benchmarks to report CPU per operation besides
// wall time, which a busy machine inflates.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
