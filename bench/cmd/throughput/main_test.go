package main

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/billkit/billkit/bench"
)

func TestParseRedisCPU(t *testing.T) {
	in := "# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.250000\r\nused_cpu_sys_children:9.000000\r\n"
	got, err := parseRedisCPU(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3750 * time.Millisecond; got != want {
		t.Errorf("parseRedisCPU = %v, want %v", got, want)
	}
	if _, err := parseRedisCPU("# CPU\r\n"); err == nil {
		t.Error("no error without used_cpu_*")
	}
}

func TestTable(t *testing.T) {
	cs := []bench.Contender{{Name: "billkit"}, {Name: "ulule"}, {Name: "redis_rate"}}
	s := func(req int64, cpuMS int) sample {
		return sample{requests: req, wall: time.Second, cpu: time.Duration(cpuMS) * time.Millisecond,
			p50: 50 * time.Microsecond, p99: 120 * time.Microsecond}
	}
	res := []configResult{{conc: 64, subjects: 1000, runs: [][]sample{
		{s(30000, 900), s(20000, 600), s(40000, 1200)}, // median 30k/s, 30 µs
		{s(10000, 600), s(10000, 600), s(10000, 600)},  // 10k/s, 60 µs
		{s(15000, 600), s(15000, 600), s(15000, 600)},  // 15k/s, 40 µs
	}}}
	var out bytes.Buffer
	printTable(&out, cs, res, options{rounds: 3, duration: time.Second})
	for _, want := range []string{
		"| 64 | 1000 | billkit | 30.0k | 2.00× | 20.0k–40.0k | 50.0 | 120.0 | 30.0 | 0.75× | 0 |",
		"| 64 | 1000 | ulule | 10.0k | 0.67× | 10.0k–10.0k | 50.0 | 120.0 | 60.0 | 1.50× | 0 |",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

func TestTableBase(t *testing.T) {
	cs := []bench.Contender{{Name: "billkit"}, {Name: "billkit-prev"}}
	s := func(req int64, cpuMS int, p50, p99 time.Duration) sample {
		return sample{requests: req, wall: time.Second, cpu: time.Duration(cpuMS) * time.Millisecond, p50: p50, p99: p99}
	}
	us := time.Microsecond
	res := []configResult{{conc: 1, subjects: 1, runs: [][]sample{
		{s(18000, 900, 50*us, 150*us), s(20000, 1000, 45*us, 140*us), s(22000, 1100, 40*us, 130*us)},
		{s(20000, 1200, 50*us, 100*us), s(20000, 1200, 50*us, 100*us), s(20000, 1200, 50*us, 100*us)},
	}}}
	var out bytes.Buffer
	printTable(&out, cs, res, options{rounds: 3, duration: time.Second, base: "billkit-prev"})
	for _, want := range []string{
		"| requests/s | × billkit-prev | req/s min–max |",
		"| 1 | 1 | billkit | 20.0k | 1.00× | 18.0k–22.0k | 45.0 | 140.0 | 50.0 | 0.83× | 0 |",
		"| 1 | 1 | billkit-prev | 20.0k | 1.00× | 20.0k–20.0k | 50.0 | 100.0 | 60.0 | 1.00× | 0 |",
		"| 1 | 1 | billkit | 1.00× | 0.90× | 1.40× | 0.83× |",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "| 1 | 1 | billkit-prev | 1.00×") {
		t.Errorf("ratio table lists the base itself:\n%s", out.String())
	}
}

func TestMedian(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median = %v", m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Errorf("median = %v", m)
	}
}

func TestHistogram(t *testing.T) {
	t.Parallel()
	for ns := uint64(0); ns < 1<<20; ns += 1 + ns/100 {
		i := bucketOf(ns)
		if i >= nBuckets {
			t.Fatalf("bucketOf(%d) = %d, out of range", ns, i)
		}
		if mid := bucketMid(i); math.Abs(mid-float64(ns)) > 0.016*float64(ns)+0.5 {
			t.Fatalf("bucketOf(%d) = %d, whose middle %v is more than 1.6%% off", ns, i, mid)
		}
	}
	if i := bucketOf(math.MaxUint64); i != nBuckets-1 {
		t.Errorf("bucketOf(max) = %d, want the last bucket %d", i, nBuckets-1)
	}

	var a, b histogram
	for i := 1; i <= 99; i++ {
		a.record(time.Duration(i) * time.Microsecond)
	}
	b.record(time.Second)
	a.merge(&b)
	tests := []struct {
		q    float64
		want time.Duration
	}{
		{0.50, 50 * time.Microsecond},
		{0.99, 99 * time.Microsecond},
		{1, time.Second},
	}
	for _, tt := range tests {
		got := a.quantile(tt.q)
		if d := math.Abs(float64(got-tt.want)) / float64(tt.want); d > 0.016 {
			t.Errorf("quantile(%v) = %v, want %v within 1.6%%", tt.q, got, tt.want)
		}
	}
	var empty histogram
	if got := empty.quantile(0.5); got != 0 {
		t.Errorf("empty quantile = %v, want 0", got)
	}
}
