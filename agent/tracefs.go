package agent

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// TracefsPath is where the syscall tracepoints are looked up.
const TracefsPath = "/sys/kernel/tracing"

// EnsureTracefs mounts tracefs at /sys/kernel/tracing when it is missing,
// which is the state of many minimal hosts and containers. It reports
// whether it mounted it (so that the caller may unmount on exit).
func EnsureTracefs() (mounted bool, err error) {
	if _, err := os.Stat(TracefsPath + "/events/syscalls"); err == nil {
		return false, nil
	}
	if err := os.MkdirAll(TracefsPath, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return false, fmt.Errorf("tracefs: %s: %w", TracefsPath, err)
	}
	if err := unix.Mount("tracefs", TracefsPath, "tracefs", 0, ""); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return false, nil
		}
		return false, fmt.Errorf("tracefs is not mounted at %s and mounting it failed: %w", TracefsPath, err)
	}
	if _, err := os.Stat(TracefsPath + "/events/syscalls"); err != nil {
		return true, fmt.Errorf("tracefs mounted at %s but has no syscall tracepoints (kernel without CONFIG_FTRACE_SYSCALLS?)", TracefsPath)
	}
	return true, nil
}
