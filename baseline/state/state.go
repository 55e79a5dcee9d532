package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/apisonar/apisonar/baseline"
)

// FileName is the state file inside the state directory.
const FileName = "inventory.json"

const tmpPrefix = ".inventory-"

// header starts every state file; the CRC of the JSON body after it lets
// Load tell a damaged file (a disk or a person editing it by hand) from a
// good one.
const header = "apisonar-inventory crc32="

// Save writes snap atomically to dir/inventory.json. One process saves to
// a directory at a time.
func Save(dir string, snap *baseline.Snapshot) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state dir %s: %w", dir, err)
	}
	body, err := json.Marshal(snap)
	if err != nil {
		return fmt.Errorf("encode inventory snapshot: %w", err)
	}
	final := filepath.Join(dir, FileName)
	cleanTemps(dir)
	f, err := os.CreateTemp(dir, tmpPrefix+"*")
	if err != nil {
		return fmt.Errorf("state dir %s: %w", dir, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", final, err)
	}
	if _, err := fmt.Fprintf(f, "%s%08x\n", header, crc32.ChecksumIEEE(body)); err != nil {
		return fail(err)
	}
	if _, err := f.Write(body); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, final); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", final, err)
	}
	// The rename is durable only once the directory entry is.
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return fmt.Errorf("sync %s: %w", dir, err)
		}
	}
	return nil
}

// Load reads dir/inventory.json. It returns (nil, nil) when there is no
// state yet. A state file that does not decode is moved aside to
// inventory.json.corrupt (for a person to look at; the next Save starts
// afresh) and reported.
func Load(dir string) (*baseline.Snapshot, error) {
	p := filepath.Join(dir, FileName)
	snap, err := readFile(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil
	case err != nil:
		if rerr := os.Rename(p, p+".corrupt"); rerr == nil {
			err = fmt.Errorf("%w (moved aside to %s)", err, p+".corrupt")
		}
		return nil, err
	}
	return snap, nil
}

func readFile(path string) (*baseline.Snapshot, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	line, body, ok := bytes.Cut(data, []byte("\n"))
	if !ok || !bytes.HasPrefix(line, []byte(header)) {
		return nil, fmt.Errorf("state file %s: not an apisonar inventory (bad header)", path)
	}
	var sum uint32
	if _, err := fmt.Sscanf(string(line[len(header):]), "%08x", &sum); err != nil {
		return nil, fmt.Errorf("state file %s: bad checksum field: %v", path, err)
	}
	if got := crc32.ChecksumIEEE(body); got != sum {
		return nil, fmt.Errorf("state file %s: checksum %08x, header says %08x: the file is damaged", path, got, sum)
	}
	var snap baseline.Snapshot
	if err := json.Unmarshal(body, &snap); err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	if snap.Version != baseline.SnapshotVersion {
		return nil, fmt.Errorf("state file %s: snapshot version %d, this agent reads %d", path, snap.Version, baseline.SnapshotVersion)
	}
	return &snap, nil
}

// cleanTemps removes temporary files an interrupted Save left behind.
func cleanTemps(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}
