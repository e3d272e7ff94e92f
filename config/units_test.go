package config

import (
	"math"
	"testing"
	"time"
)

func TestByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  bool
	}{
		{in: "0", want: 0},
		{in: "1024", want: 1024},
		{in: "512B", want: 512},
		{in: "1KB", want: 1000},
		{in: "1KiB", want: 1024},
		{in: "64 KiB", want: 64 << 10},
		{in: "2MB", want: 2_000_000},
		{in: "64MiB", want: 64 << 20},
		{in: "3GB", want: 3_000_000_000},
		{in: "1GiB", want: 1 << 30},
		{in: " 7 ", want: 7},
		{in: "", err: true},
		{in: "MiB", err: true},
		{in: "-1", err: true},
		{in: "+1", err: true},
		{in: "1.5MiB", err: true},
		{in: "64mb", err: true},
		{in: "64 M", err: true},
		{in: "1TiB", err: true},
		{in: "1_000", err: true},
		{in: "0x10", err: true},
		{in: "9223372036854775807", want: math.MaxInt64},
		{in: "9223372036854775808", err: true},
		{in: "9999999999GiB", err: true},
	}
	for _, tt := range tests {
		var b ByteSize
		err := b.UnmarshalText([]byte(tt.in))
		switch {
		case tt.err && err == nil:
			t.Errorf("ByteSize(%q) = %d, want an error", tt.in, b)
		case !tt.err && err != nil:
			t.Errorf("ByteSize(%q): %v", tt.in, err)
		case !tt.err && int64(b) != tt.want:
			t.Errorf("ByteSize(%q) = %d, want %d", tt.in, b, tt.want)
		}
	}
}

func TestByteSizeString(t *testing.T) {
	tests := []struct {
		in   ByteSize
		want string
	}{
		{0, "0B"},
		{1, "1B"},
		{1000, "1000B"},
		{1024, "1KiB"},
		{1536, "1536B"},
		{3 << 20, "3MiB"},
		{1 << 30, "1GiB"},
		{5 << 30, "5GiB"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("ByteSize(%d).String() = %q, want %q", int64(tt.in), got, tt.want)
		}
		var back ByteSize
		if err := back.UnmarshalText([]byte(tt.in.String())); err != nil || back != tt.in {
			t.Errorf("round trip of %d: got %d, %v", int64(tt.in), back, err)
		}
	}
	if got := ByteSize(64 << 20).Int(); got != 64<<20 {
		t.Errorf("Int() = %d", got)
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		err  bool
	}{
		{in: "30s", want: 30 * time.Second},
		{in: "1m30s", want: 90 * time.Second},
		{in: "1.5h", want: 90 * time.Minute},
		{in: "250ms", want: 250 * time.Millisecond},
		{in: "0s", want: 0},
		{in: "0", want: 0},
		{in: "30", err: true},
		{in: "", err: true},
		{in: "-1s", err: true},
		{in: "1d", err: true},
		{in: "soon", err: true},
	}
	for _, tt := range tests {
		var d Duration
		err := d.UnmarshalText([]byte(tt.in))
		switch {
		case tt.err && err == nil:
			t.Errorf("Duration(%q) = %v, want an error", tt.in, d)
		case !tt.err && err != nil:
			t.Errorf("Duration(%q): %v", tt.in, err)
		case !tt.err && d.D() != tt.want:
			t.Errorf("Duration(%q) = %v, want %v", tt.in, d.D(), tt.want)
		}
	}
	if got := Duration(90 * time.Second).String(); got != "1m30s" {
		t.Errorf("String() = %q", got)
	}
}
