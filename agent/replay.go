package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ReplayOutput says where a replay reports besides the JSON lines.
type ReplayOutput struct {
	// InventoryOut, when set, receives the observed inventory as an
	// OpenAPI 3 document.
	InventoryOut string
	// Stderr receives the summary, warnings and (on a terminal) progress.
	Stderr io.Writer
}

// Replay drives every stage from a capture file on the packets' own
// timestamps, then prints a summary on o.Stderr.
func (p *Pipeline) Replay(ctx context.Context, path string, o ReplayOutput) error {
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	if st, err := os.Stat(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return UserError{fmt.Errorf("%s: no such file", path)}
		}
		return UserError{fmt.Errorf("%s: %w", path, errors.Unwrap(err))}
	} else if st.IsDir() {
		return UserError{fmt.Errorf("%s: is a directory, not a capture file", path)}
	}
	var progress func(ReplayProgress)
	if isTerminal(o.Stderr) {
		progress = func(pr ReplayProgress) {
			pct := 0.0
			if pr.FileSize > 0 {
				pct = 100 * float64(pr.BytesRead) / float64(pr.FileSize)
			}
			fmt.Fprintf(o.Stderr, "\rreplay: %5.1f%%  %d MB of %d MB, %d packets, %d calls ",
				pct, pr.BytesRead>>20, pr.FileSize>>20, pr.Packets, p.stats.Calls.Load())
		}
	}
	flushDone := make(chan struct{})
	fctx, stopFlush := context.WithCancel(ctx)
	if p.out != nil {
		go func() { defer close(flushDone); p.flushLoop(fctx) }()
	} else {
		close(flushDone)
	}
	sum, err := ReplayFile(ctx, path, p.tracker, progress)
	stopFlush()
	p.shutdownExport()
	<-flushDone
	if progress != nil {
		fmt.Fprint(o.Stderr, "\r\033[K")
	}
	if p.out != nil {
		if ferr := p.out.Flush(); ferr != nil && err == nil {
			err = fmt.Errorf("writing JSON lines: %w", ferr)
		}
	}
	if err != nil {
		if errors.Is(err, ErrNotCapture) {
			return UserError{err}
		}
		return err
	}
	for _, w := range sum.Warnings {
		fmt.Fprintf(o.Stderr, "apisonar: warning: %s\n", w)
	}
	span := sum.Last.Sub(sum.First)
	fmt.Fprintf(o.Stderr, "replay: %s: %d packets, %.1f MB, %d TCP connections, %d calls, %d findings, %d gaps (%d bytes), %d parser resyncs; capture spans %s, read in %s\n",
		path, sum.Packets, float64(sum.Bytes)/1e6, sum.TCPConns, p.stats.Calls.Load(), p.findings.Load(), sum.Gaps, sum.GapBytes,
		p.stats.Resyncs.Load(), span.Round(time.Millisecond), sum.Wall.Round(time.Millisecond))
	if o.InventoryOut != "" {
		if err := p.writeInventory(o.InventoryOut); err != nil {
			return err
		}
	}
	return nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
