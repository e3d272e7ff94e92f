package config

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
)

// String returns d in Go duration syntax, such as "1m30s".
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText returns d in Go duration syntax, so that a Config written out
// with a YAML or JSON encoder reads back unchanged.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses a Go duration string such as "30s" or "1m30s"; a
// negative duration is an error. The error does not quote text.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(strings.TrimSpace(string(text)))
	if err != nil {
		return errors.New(`must be a duration with a unit, such as "30s" or "1m30s"`)
	}
	if v < 0 {
		return errors.New("must not be negative")
	}
	*d = Duration(v)
	return nil
}

// Byte size units accepted by ByteSize.UnmarshalText. KB, MB and GB are
// decimal (powers of 1000), KiB, MiB and GiB binary (powers of 1024).
const (
	kiB = 1 << 10
	miB = 1 << 20
	giB = 1 << 30
)

// byteUnits maps each accepted unit suffix to its size in bytes; no suffix
// means bytes.
func byteUnits(unit string) (int64, bool) {
	switch unit {
	case "", "B":
		return 1, true
	case "KB":
		return 1000, true
	case "KiB":
		return kiB, true
	case "MB":
		return 1000 * 1000, true
	case "MiB":
		return miB, true
	case "GB":
		return 1000 * 1000 * 1000, true
	case "GiB":
		return giB, true
	}
	return 0, false
}

// Int returns b as an int, clamped to math.MaxInt on platforms where int is
// narrower than 64 bits.
func (b ByteSize) Int() int {
	if int64(b) > math.MaxInt {
		return math.MaxInt
	}
	return int(b)
}

// String returns b with the largest binary unit that represents it exactly,
// such as "64MiB", or as a number of bytes with unit B, such as "1000B".
func (b ByteSize) String() string {
	n := int64(b)
	switch {
	case n != 0 && n%giB == 0:
		return strconv.FormatInt(n/giB, 10) + "GiB"
	case n != 0 && n%miB == 0:
		return strconv.FormatInt(n/miB, 10) + "MiB"
	case n != 0 && n%kiB == 0:
		return strconv.FormatInt(n/kiB, 10) + "KiB"
	}
	return strconv.FormatInt(n, 10) + "B"
}

// MarshalText returns b as String does, so that a Config written out with a
// YAML or JSON encoder reads back unchanged.
func (b ByteSize) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// UnmarshalText parses a non-negative integer number of bytes, optionally
// followed by a unit: B, KB, KiB, MB, MiB, GB or GiB ("64MiB", "512 KB").
// The error does not quote text.
func (b *ByteSize) UnmarshalText(text []byte) error {
	const syntax = `must be a size in bytes: an integer, optionally with unit B, KB, KiB, MB, MiB, GB or GiB, such as "64MiB"`
	s := strings.TrimSpace(string(text))
	i := 0
	for i < len(s) && '0' <= s[i] && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return errors.New(syntax)
	}
	mult, ok := byteUnits(strings.TrimSpace(s[i:]))
	if !ok {
		return errors.New(syntax)
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return errors.New("is too large")
	}
	*b = ByteSize(n * mult)
	return nil
}
