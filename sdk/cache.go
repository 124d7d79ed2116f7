package sdk

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// The disk cache keeps the last discovery and config answers of a process
// (DiscoveryOptions.CacheDir, ConfigWatcherOptions.CacheDir), so that a
// process that starts while the control plane cannot be reached serves what
// the previous run last had instead of nothing. A file is written, whole,
// when a new answer arrives (a temporary file renamed over the old one: a
// reader sees the old file or the new, never half of one); it is read only
// when the first poll fails, and a fresh answer always replaces what it
// held. Files of another format, or that do not decode, are ignored with a
// log line.

// cacheFormat is the version of the cache files' format; a file of another
// version is ignored.
const cacheFormat = 1

// cacheFile is one cached answer.
type cacheFile struct {
	Format  int             `json:"format"`
	Kind    string          `json:"kind"` // "discovery" or "config"
	Key     string          `json:"key"`  // the service
	SavedAt time.Time       `json:"saved_at"`
	Data    json.RawMessage `json:"data"`
}

// diskCache reads and writes cache files in one directory; a nil
// *diskCache caches nothing.
type diskCache struct {
	dir      string
	log      *slog.Logger
	failures atomic.Int64 // writes that failed
}

func newDiskCache(dir string, log *slog.Logger) *diskCache {
	if dir == "" {
		return nil
	}
	return &diskCache{dir: dir, log: log}
}

// path is the file of key's answer of kind: the key with anything but
// letters, digits, '.', '_' and '-' replaced (file names must be valid on
// every system), and a hash of the key so that two keys never share one.
func (c *diskCache) path(kind, key string) string {
	clean := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			return r
		}
		return '_'
	}, key)
	if len(clean) > 100 {
		clean = clean[:100]
	}
	h := fnv.New32a()
	h.Write([]byte(key))
	return filepath.Join(c.dir, fmt.Sprintf("%s-%s-%08x.json", kind, clean, h.Sum32()))
}

// save writes v as key's answer of kind, received at.
func (c *diskCache) save(kind, key string, v any, at time.Time) {
	if c == nil {
		return
	}
	if err := c.write(kind, key, v, at); err != nil {
		if n := c.failures.Add(1); n == 1 || n%100 == 0 {
			c.log.Warn("cannot write the SDK's disk cache", "kind", kind, "key", key, "err", err, "failures", n)
		}
	}
}

func (c *diskCache) write(kind, key string, v any, at time.Time) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	b, err := json.Marshal(cacheFile{Format: cacheFormat, Kind: kind, Key: key, SavedAt: at, Data: data})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return err
	}
	path := c.path(kind, key)
	f, err := os.CreateTemp(c.dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// load reads key's answer of kind into v and says when it was received; ok
// is false when there is none, or none that can be used (logged).
func (c *diskCache) load(kind, key string, v any) (savedAt time.Time, ok bool) {
	if c == nil {
		return time.Time{}, false
	}
	path := c.path(kind, key)
	b, err := os.ReadFile(path)
	if err != nil {
		if !os.IsNotExist(err) {
			c.log.Warn("cannot read the SDK's disk cache; ignoring it", "file", path, "err", err)
		}
		return time.Time{}, false
	}
	var f cacheFile
	switch err := json.Unmarshal(b, &f); {
	case err != nil:
		c.log.Warn("ignoring a corrupt SDK cache file", "file", path, "err", err)
		return time.Time{}, false
	case f.Format != cacheFormat:
		c.log.Warn("ignoring an SDK cache file of another format", "file", path, "format", f.Format, "want", cacheFormat)
		return time.Time{}, false
	case f.Kind != kind || f.Key != key:
		c.log.Warn("ignoring an SDK cache file of another answer", "file", path, "kind", f.Kind, "key", f.Key)
		return time.Time{}, false
	}
	if err := json.Unmarshal(f.Data, v); err != nil {
		c.log.Warn("ignoring a corrupt SDK cache file", "file", path, "err", err)
		return time.Time{}, false
	}
	return f.SavedAt, true
}
