// Command ratio reads `go test -bench` output of BenchmarkLimiter and prints,
// as markdown, each contender's median ns/op and allocs/op divided by
// billkit's, for every configuration (subjects, mode, GOMAXPROCS).
//
//	go run ./cmd/ratio results/bench.txt
//
// Benchmark names look like
// BenchmarkLimiter/impl=ulule/subjects=1/mode=serial-2: the impl= element
// names the contender, the rest (with the -N GOMAXPROCS suffix) the
// configuration.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// base is the contender the others are divided by.
const base = "billkit"

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "ratio:", err)
		os.Exit(1)
	}
}

func run(args []string, stdin io.Reader, stdout io.Writer) error {
	res := newResults()
	if len(args) == 0 {
		if err := res.read(stdin); err != nil {
			return err
		}
	}
	for _, name := range args {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		err = res.read(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if len(res.configs) == 0 {
		return fmt.Errorf("no BenchmarkLimiter results in the input")
	}
	if !slices.Contains(res.impls, base) {
		return fmt.Errorf("no %s results in the input", base)
	}
	res.table(stdout, "ns/op", "time per request")
	fmt.Fprintln(stdout)
	res.table(stdout, "allocs/op", "allocations per request")
	return nil
}

// results holds the samples of every (configuration, contender, unit).
type results struct {
	configs []string // in order of appearance
	impls   []string // in order of appearance
	samples map[string]map[string]map[string][]float64
}

func newResults() *results {
	return &results{samples: make(map[string]map[string]map[string][]float64)}
}

func (r *results) read(in io.Reader) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "BenchmarkLimiter/") {
			continue
		}
		impl, config, ok := split(f[0])
		if !ok {
			continue
		}
		if _, err := strconv.ParseInt(f[1], 10, 64); err != nil {
			continue // not a result line
		}
		if r.samples[config] == nil {
			r.samples[config] = make(map[string]map[string][]float64)
			r.configs = append(r.configs, config)
		}
		if !slices.Contains(r.impls, impl) {
			r.impls = append(r.impls, impl)
		}
		if r.samples[config][impl] == nil {
			r.samples[config][impl] = make(map[string][]float64)
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return fmt.Errorf("%q: %w", sc.Text(), err)
			}
			unit := f[i+1]
			r.samples[config][impl][unit] = append(r.samples[config][impl][unit], v)
		}
	}
	return sc.Err()
}

// split returns the contender and the configuration of a benchmark name:
// BenchmarkLimiter/impl=ulule/subjects=1/mode=serial-2 gives "ulule" and
// "subjects=1/mode=serial-2".
func split(name string) (impl, config string, ok bool) {
	parts := strings.Split(name, "/")[1:]
	var rest []string
	for _, p := range parts {
		if v, found := strings.CutPrefix(p, "impl="); found {
			impl = v
			continue
		}
		rest = append(rest, p)
	}
	return impl, strings.Join(rest, "/"), impl != ""
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// table prints one markdown table: per configuration, billkit's median and
// every other contender's median with its ratio to billkit's.
func (r *results) table(w io.Writer, unit, title string) {
	fmt.Fprintf(w, "%s: median %s, and in parentheses ÷ %s (below 1: cheaper than %s)\n\n", title, unit, base, base)
	fmt.Fprintf(w, "| configuration |")
	for _, impl := range r.impls {
		fmt.Fprintf(w, " %s |", impl)
	}
	fmt.Fprintf(w, "\n|---|")
	for range r.impls {
		fmt.Fprintf(w, "---:|")
	}
	fmt.Fprintln(w)
	for _, c := range r.configs {
		fmt.Fprintf(w, "| %s |", c)
		bs := r.samples[c][base][unit]
		for _, impl := range r.impls {
			xs := r.samples[c][impl][unit]
			switch {
			case len(xs) == 0:
				fmt.Fprintf(w, " – |")
			case impl == base || len(bs) == 0:
				fmt.Fprintf(w, " %s |", format(median(xs), unit))
			default:
				b := median(bs)
				ratio := "–"
				if b != 0 {
					ratio = formatRatio(median(xs) / b)
				}
				fmt.Fprintf(w, " %s (%s) |", format(median(xs), unit), ratio)
			}
		}
		fmt.Fprintln(w)
	}
}

func format(v float64, unit string) string {
	if unit != "ns/op" {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fms", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fµs", v/1e3)
	default:
		return fmt.Sprintf("%.0fns", v)
	}
}

func formatRatio(r float64) string {
	if r < 0.1 {
		return fmt.Sprintf("%.3f×", r)
	}
	return fmt.Sprintf("%.2f×", r)
}
