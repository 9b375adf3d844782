package main

import (
	"bytes"
	"strings"
	"testing"
)

const sample = `goos: linux
BenchmarkLimiter/impl=billkit/subjects=1/mode=serial-2   	 1000	     40000 ns/op	 4.000 cmds/op	 2464 B/op	 33 allocs/op
BenchmarkLimiter/impl=billkit/subjects=1/mode=serial-2   	 1000	     60000 ns/op	 4.000 cmds/op	 2464 B/op	 33 allocs/op
BenchmarkLimiter/impl=billkit/subjects=1/mode=serial-2   	 1000	     50000 ns/op	 4.000 cmds/op	 2464 B/op	 33 allocs/op
BenchmarkLimiter/impl=ulule/subjects=1/mode=serial-2     	 1000	     25000 ns/op	 3.000 cmds/op	 1592 B/op	 32 allocs/op
BenchmarkLimiter/impl=ulule/subjects=1/mode=serial-2     	 1000	     75000 ns/op	 3.000 cmds/op	 1592 B/op	 32 allocs/op
BenchmarkLimiter/impl=bare/subjects=1/mode=serial-2      	 1000	       500 ns/op	 0 cmds/op	 208 B/op	 4 allocs/op
PASS
`

func TestRatio(t *testing.T) {
	var out bytes.Buffer
	if err := run(nil, strings.NewReader(sample), &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		"| configuration | billkit | ulule | bare |",
		// billkit's median is 50µs; ulule's is (25+75)/2 = 50µs: 1.00×.
		"| subjects=1/mode=serial-2 | 50.0µs | 50.0µs (1.00×) | 500ns (0.010×) |",
		"| subjects=1/mode=serial-2 | 33 | 32 (0.97×) | 4 (0.12×) |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}

func TestRatioNeedsBase(t *testing.T) {
	in := "BenchmarkLimiter/impl=ulule/subjects=1/mode=serial-2 1000 25000 ns/op\n"
	if err := run(nil, strings.NewReader(in), &bytes.Buffer{}); err == nil {
		t.Fatal("no error without billkit results")
	}
	if err := run(nil, strings.NewReader("PASS\n"), &bytes.Buffer{}); err == nil {
		t.Fatal("no error without results")
	}
}

func TestSplit(t *testing.T) {
	tests := []struct{ name, impl, config string }{
		{"BenchmarkLimiter/impl=ulule/subjects=1/mode=serial-2", "ulule", "subjects=1/mode=serial-2"},
		{"BenchmarkLimiter/subjects=1/impl=redis_rate/mode=parallel", "redis_rate", "subjects=1/mode=parallel"},
	}
	for _, tt := range tests {
		impl, config, ok := split(tt.name)
		if !ok || impl != tt.impl || config != tt.config {
			t.Errorf("split(%q) = %q, %q, %v; want %q, %q", tt.name, impl, config, ok, tt.impl, tt.config)
		}
	}
	if _, _, ok := split("BenchmarkLimiter/subjects=1"); ok {
		t.Error("split accepted a name without impl=")
	}
}
