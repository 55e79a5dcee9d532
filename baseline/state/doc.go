// Package state persists the inventory snapshot in the agent's state
// directory (--state-dir), so that a restarted agent keeps first and last
// seen, counts, sketches and the findings it already raised.
//
// Save writes the whole snapshot to a temporary file in the same
// directory, syncs it, renames it over the previous state and syncs the
// directory: at every instant the state file is either the previous
// complete snapshot or the new complete one. A crash (kill -9, power loss
// after the directory sync) loses at most what happened since the last
// Save and never leaves a torn state file; temporary files left by a crash
// are ignored and cleaned up by the next Save.
//
// Load reads the state back. A missing state is not an error (a first
// start); a state file that does not decode (checksum, format version) is
// reported with its path and moved aside, never overwritten silently.
//
// This is the only part of baseline that touches the disk; callers own the
// schedule (a flush interval and a final Save on shutdown).
package state
