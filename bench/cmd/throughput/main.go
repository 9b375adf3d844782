// Command throughput measures what a server sees from each contender of
// package bench: requests per second and CPU per request (this process plus
// redis-server) with many requests in flight at once.
//
//	cd bench && go run ./cmd/throughput
//	go run ./cmd/throughput -rounds 3 -duration 1s -conc 1,64 -subjects 1000
//
// It starts its own redis-server on a free loopback port (stopped at the
// end, also on SIGINT/SIGTERM), then for every concurrency (goroutines, each
// calling the contender's http.Handler directly in a loop, one request at a
// time) and every subject count runs interleaved rounds: in each round every
// contender runs for -duration, in an order rotated by one each round, so
// that a change of the machine's load spreads over all of them. For every
// run it records
//
//   - requests answered, divided by the wall time of the run;
//   - CPU: the delta of this process's getrusage(RUSAGE_SELF) user+sys plus
//     the delta of redis-server's INFO cpu used_cpu_user+used_cpu_sys,
//     divided by the requests;
//   - latency: the 50th and 99th percentile of the time each call of the
//     handler took (a histogram per goroutine, about 1.6% resolution).
//
// It prints, as Markdown, the median of each over the rounds, the ratio to
// the fastest (or leanest) peer (ulule, redis_rate, throttled; the floors
// incr and bare are never "peers"), and the spread of requests/s. With
// -base NAME the ratios are to that contender instead, and a second table
// gives every other contender's ratios to it for requests/s, p50, p99 and
// CPU/request.
//
// Before measuring, every subject gets one request from every contender, so
// the figures are the steady state. A non-2xx answer is counted and shown;
// every limiter allows 1e9 requests per window, so there should be none.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/billkit/billkit/bench"
	"github.com/redis/go-redis/v9"
)

// peers are the contenders the ratios are taken against.
var peers = []string{"ulule", "redis_rate", "throttled"}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "throughput:", err)
		os.Exit(1)
	}
}

type options struct {
	rounds     int
	duration   time.Duration
	conc       []int
	subjects   []int
	contenders []string
	base       string // the contender ratios are taken to; "" for the best peer
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad positive integer %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("throughput", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rounds := fs.Int("rounds", 5, "interleaved rounds per configuration (1..50)")
	duration := fs.Duration("duration", 2*time.Second, "length of one contender's run in a round (10ms..30s)")
	concS := fs.String("conc", "1,64,256", "concurrent requests (goroutines), comma-separated (each 1..1024)")
	subjS := fs.String("subjects", "1,1000", "subjects (distinct keys), comma-separated (each 1..100000)")
	contS := fs.String("contenders", "billkit,ulule,redis_rate,throttled,incr", "contenders, comma-separated, from: "+strings.Join(names(bench.Contenders()), ","))
	base := fs.String("base", "", "contender the ratios are taken to (default: the best peer of each configuration); also prints every other contender's ratios to it")
	redisBin := fs.String("redis-server", "", "redis-server binary (default: $REDIS_SERVER, else $PATH)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of this process (all runs) to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	o := options{rounds: *rounds, duration: *duration, base: *base}
	var err error
	if o.conc, err = parseInts(*concS); err != nil {
		return fmt.Errorf("-conc: %w", err)
	}
	if o.subjects, err = parseInts(*subjS); err != nil {
		return fmt.Errorf("-subjects: %w", err)
	}
	// Bounds keep the run finite and modest on a small machine.
	if o.rounds < 1 || o.rounds > 50 {
		return fmt.Errorf("-rounds %d: want 1..50", o.rounds)
	}
	if o.duration < 10*time.Millisecond || o.duration > 30*time.Second {
		return fmt.Errorf("-duration %v: want 10ms..30s", o.duration)
	}
	for _, c := range o.conc {
		if c > 1024 {
			return fmt.Errorf("-conc %d: want at most 1024", c)
		}
	}
	for _, s := range o.subjects {
		if s > 100000 {
			return fmt.Errorf("-subjects %d: want at most 100000", s)
		}
	}
	all := bench.Contenders()
	var cs []bench.Contender
	for _, n := range strings.Split(*contS, ",") {
		i := slices.IndexFunc(all, func(c bench.Contender) bool { return c.Name == n })
		if i < 0 {
			return fmt.Errorf("-contenders: unknown %q", n)
		}
		cs = append(cs, all[i])
	}
	if o.base != "" && !slices.ContainsFunc(cs, func(c bench.Contender) bool { return c.Name == o.base }) {
		return fmt.Errorf("-base %q is not among -contenders %s", o.base, *contS)
	}

	bin := *redisBin
	if bin == "" {
		bin = os.Getenv("REDIS_SERVER")
	}
	if bin == "" {
		if bin, err = exec.LookPath("redis-server"); err != nil {
			return errors.New("redis-server not found (apt-get install -y redis-server, or -redis-server PATH)")
		}
	}
	srv, err := startRedis(bin)
	if err != nil {
		return err
	}
	defer srv.stop()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		srv.stop()
		os.Exit(130)
	}()

	ctx := context.Background()
	rdb := bench.NewClient(srv.addr)
	defer rdb.Close()
	// A separate client for INFO, so that it never waits behind the load
	// for a pooled connection.
	info := redis.NewClient(&redis.Options{Addr: srv.addr})
	defer info.Close()

	handlers := make([]http.Handler, len(cs))
	for i, c := range cs {
		h, err := c.New(rdb, bench.Policy{Limit: 1e9}, bench.OK)
		if err != nil {
			return fmt.Errorf("%s: %w", c.Name, err)
		}
		handlers[i] = h
	}

	nconf := len(o.conc) * len(o.subjects)
	fmt.Fprintf(stderr, "throughput: load average %s\n", loadavg())
	fmt.Fprintf(stderr, "throughput: redis-server %s on %s; %d configurations × %d rounds × %d contenders × %v ≈ %v\n",
		redisVersion(ctx, info), srv.addr, nconf, o.rounds, len(cs), o.duration,
		time.Duration(nconf*o.rounds*len(cs))*o.duration)

	var results []configResult
	for _, conc := range o.conc {
		for _, nsub := range o.subjects {
			reqs := makeRequests(nsub)
			// Warm up: every subject's keys exist, scripts are loaded.
			for i, h := range handlers {
				for _, r := range reqs {
					w := newWriter()
					h.ServeHTTP(w, r)
					if w.code >= 300 {
						return fmt.Errorf("%s warm-up: status %d", cs[i].Name, w.code)
					}
				}
			}
			cr := configResult{conc: conc, subjects: nsub, runs: make([][]sample, len(cs))}
			for round := 0; round < o.rounds; round++ {
				for k := range cs {
					i := (k + round) % len(cs)
					s, err := measure(ctx, info, handlers[i], reqs, conc, o.duration)
					if err != nil {
						return fmt.Errorf("%s: %w", cs[i].Name, err)
					}
					cr.runs[i] = append(cr.runs[i], s)
					fmt.Fprintf(stderr, "conc=%d subjects=%d round=%d %-12s %9.0f req/s p50 %7.1f µs p99 %7.1f µs %7.1f µs CPU/req (redis-server %5.1f) %d non-2xx\n",
						conc, nsub, round+1, cs[i].Name, s.rps(), micros(s.p50), micros(s.p99), s.cpuPerReq(), s.redisCPUPerReq(), s.non2xx)
				}
			}
			results = append(results, cr)
		}
	}
	fmt.Fprintf(stderr, "throughput: done; load average %s\n", loadavg())
	printTable(stdout, cs, results, o)
	return nil
}

// loadavg returns /proc/loadavg's first three fields (other load on the
// machine is the main source of noise), or "?".
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func names(cs []bench.Contender) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func makeRequests(n int) []*http.Request {
	reqs := make([]*http.Request, n)
	for i := range reqs {
		r, _ := http.NewRequest(http.MethodGet, "http://bench.example/v1/things", nil)
		r.RemoteAddr = "192.0.2.1:1234"
		r.Header.Set(bench.SubjectHeader, fmt.Sprintf("cust_%05d", i))
		reqs[i] = r
	}
	return reqs
}

// writer is the smallest http.ResponseWriter: it keeps the status and
// discards the body, so that the harness adds little to what it measures.
type writer struct {
	h    http.Header
	code int
}

func newWriter() *writer { return &writer{h: make(http.Header)} }

func (w *writer) Header() http.Header { return w.h }
func (w *writer) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return len(b), nil
}
func (w *writer) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

// sample is one contender's run in one round.
type sample struct {
	requests int64
	non2xx   int64
	wall     time.Duration
	cpu      time.Duration // this process + redis-server
	rcpu     time.Duration // redis-server alone
	p50, p99 time.Duration // latency of one call of the handler
}

func micros(d time.Duration) float64 { return float64(d) / 1e3 }

func (s sample) rps() float64 { return float64(s.requests) / s.wall.Seconds() }
func (s sample) cpuPerReq() float64 {
	if s.requests == 0 {
		return 0
	}
	return float64(s.cpu) / 1e3 / float64(s.requests)
}
func (s sample) redisCPUPerReq() float64 {
	if s.requests == 0 {
		return 0
	}
	return float64(s.rcpu) / 1e3 / float64(s.requests)
}

// measure runs conc goroutines calling h for d and returns what they did.
func measure(ctx context.Context, info *redis.Client, h http.Handler, reqs []*http.Request, conc int, d time.Duration) (sample, error) {
	var (
		stop    atomic.Bool
		total   atomic.Int64
		bad     atomic.Int64
		ready   sync.WaitGroup
		done    sync.WaitGroup
		startCh = make(chan struct{})
		latMu   sync.Mutex
		lat     histogram
	)
	n := len(reqs)
	ready.Add(conc)
	done.Add(conc)
	for g := 0; g < conc; g++ {
		go func(g int) {
			defer done.Done()
			w := newWriter()
			i := g * 7919
			var cnt, nbad int64
			hist := new(histogram)
			ready.Done()
			<-startCh
			for !stop.Load() {
				clear(w.h)
				w.code = 0
				t := time.Now()
				h.ServeHTTP(w, reqs[i%n])
				hist.record(time.Since(t))
				if w.code >= 300 {
					nbad++
				}
				cnt++
				i++
			}
			total.Add(cnt)
			bad.Add(nbad)
			latMu.Lock()
			lat.merge(hist)
			latMu.Unlock()
		}(g)
	}
	ready.Wait()
	rcpu0, err := redisCPU(ctx, info)
	if err != nil {
		return sample{}, err
	}
	pcpu0 := processCPU()
	t0 := time.Now()
	close(startCh)
	time.Sleep(d)
	stop.Store(true)
	done.Wait()
	wall := time.Since(t0)
	pcpu1 := processCPU()
	rcpu1, err := redisCPU(ctx, info)
	if err != nil {
		return sample{}, err
	}
	return sample{
		requests: total.Load(),
		non2xx:   bad.Load(),
		wall:     wall,
		cpu:      (pcpu1 - pcpu0) + (rcpu1 - rcpu0),
		rcpu:     rcpu1 - rcpu0,
		p50:      lat.quantile(0.50),
		p99:      lat.quantile(0.99),
	}, nil
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// redisCPU returns redis-server's used_cpu_sys + used_cpu_user.
func redisCPU(ctx context.Context, info *redis.Client) (time.Duration, error) {
	s, err := info.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, err
	}
	return parseRedisCPU(s)
}

func parseRedisCPU(s string) (time.Duration, error) {
	var sum float64
	found := 0
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok || (k != "used_cpu_sys" && k != "used_cpu_user") {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, fmt.Errorf("INFO cpu %s: %w", k, err)
		}
		sum += f
		found++
	}
	if found != 2 {
		return 0, fmt.Errorf("INFO cpu lacks used_cpu_sys/used_cpu_user")
	}
	return time.Duration(sum * float64(time.Second)), nil
}

func redisVersion(ctx context.Context, info *redis.Client) string {
	s, err := info.Info(ctx, "server").Result()
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			return v
		}
	}
	return "?"
}

// redisServer is a redis-server started for this run.
type redisServer struct {
	addr string
	cmd  *exec.Cmd
	dir  string
	once sync.Once
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startRedis(bin string) (*redisServer, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "billkit-throughput-")
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(bin,
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no",
		"--maxmemory-policy", "noeviction",
		"--protected-mode", "yes",
		"--dir", dir,
	)
	cmd.Dir = dir
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	s := &redisServer{addr: addr, cmd: cmd, dir: dir}
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return s, nil
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("redis-server on %s did not answer: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *redisServer) stop() {
	s.once.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		ch := make(chan struct{})
		go func() { _ = s.cmd.Wait(); close(ch) }()
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			_ = s.cmd.Process.Kill()
			<-ch
		}
		os.RemoveAll(s.dir)
	})
}

type configResult struct {
	conc, subjects int
	runs           [][]sample // by contender, one per round
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

func fmtRate(x float64) string {
	if x >= 1e6 {
		return fmt.Sprintf("%.1fM", x/1e6)
	}
	if x >= 1000 {
		return fmt.Sprintf("%.1fk", x/1000)
	}
	return fmt.Sprintf("%.0f", x)
}

// summary is one contender's medians over the rounds of a configuration.
type summary struct {
	rps, cpu, p50, p99 float64
	lo, hi             float64 // requests/s
	non2xx             int64
}

func summarize(runs []sample) summary {
	var r, u, l50, l99 []float64
	var s summary
	for _, x := range runs {
		r = append(r, x.rps())
		u = append(u, x.cpuPerReq())
		l50 = append(l50, micros(x.p50))
		l99 = append(l99, micros(x.p99))
		s.non2xx += x.non2xx
	}
	s.rps, s.cpu, s.p50, s.p99 = median(r), median(u), median(l50), median(l99)
	if len(r) > 0 {
		s.lo, s.hi = slices.Min(r), slices.Max(r)
	}
	return s
}

func ratio(x, ref float64) string {
	if ref == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", x/ref)
}

// printTable writes the table of medians. The ratios are to the best peer
// of each configuration or, with o.base, to that contender; with o.base it
// also writes a table of every other contender's ratios to it, latency
// included.
func printTable(w io.Writer, cs []bench.Contender, results []configResult, o options) {
	rpsCol, cpuCol := "× fastest peer", "× leanest peer"
	if o.base != "" {
		rpsCol, cpuCol = "× "+o.base, "× "+o.base
		fmt.Fprintf(w, "Medians of %d interleaved rounds of %v per contender and configuration. "+
			"Ratios are to %s of the same configuration. ", o.rounds, o.duration, o.base)
	} else {
		fmt.Fprintf(w, "Medians of %d interleaved rounds of %v per contender and configuration. "+
			"Ratios are to the best peer (%s) of the same configuration: the fastest for requests/s, the leanest for CPU/request. ",
			o.rounds, o.duration, strings.Join(peers, ", "))
	}
	fmt.Fprint(w, "p50/p99: percentiles of the time one call of the handler took, over all the calls of a run. "+
		"CPU/request = (this process's user+sys + redis-server's used_cpu_user+used_cpu_sys) / requests.\n\n")
	fmt.Fprintf(w, "| concurrency | subjects | contender | requests/s | %s | req/s min–max | p50 µs | p99 µs | CPU µs/request | %s | non-2xx |\n", rpsCol, cpuCol)
	fmt.Fprintln(w, "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	sums := make([][]summary, len(results))
	refs := make([]summary, len(results)) // the reference of each configuration
	for k, cr := range results {
		sums[k] = make([]summary, len(cs))
		for i, c := range cs {
			s := summarize(cr.runs[i])
			sums[k][i] = s
			switch {
			case o.base != "":
				if c.Name == o.base {
					refs[k] = s
				}
			case slices.Contains(peers, c.Name):
				refs[k].rps = max(refs[k].rps, s.rps)
				if refs[k].cpu == 0 || s.cpu < refs[k].cpu {
					refs[k].cpu = s.cpu
				}
			}
		}
		for i, c := range cs {
			s, ref := sums[k][i], refs[k]
			fmt.Fprintf(w, "| %d | %d | %s | %s | %s | %s–%s | %.1f | %.1f | %.1f | %s | %d |\n",
				cr.conc, cr.subjects, c.Name, fmtRate(s.rps), ratio(s.rps, ref.rps),
				fmtRate(s.lo), fmtRate(s.hi), s.p50, s.p99, s.cpu, ratio(s.cpu, ref.cpu), s.non2xx)
		}
	}
	if o.base == "" {
		return
	}
	fmt.Fprintf(w, "\nRatios of the medians above to %s's (requests/s: above 1 is faster; latency and CPU/request: below 1 is less).\n\n", o.base)
	fmt.Fprintf(w, "| concurrency | subjects | contender | requests/s | p50 latency | p99 latency | CPU/request |\n")
	fmt.Fprintln(w, "|---:|---:|---|---:|---:|---:|---:|")
	for k, cr := range results {
		ref := refs[k]
		for i, c := range cs {
			if c.Name == o.base {
				continue
			}
			s := sums[k][i]
			fmt.Fprintf(w, "| %d | %d | %s | %s | %s | %s | %s |\n", cr.conc, cr.subjects, c.Name,
				ratio(s.rps, ref.rps), ratio(s.p50, ref.p50), ratio(s.p99, ref.p99), ratio(s.cpu, ref.cpu))
		}
	}
}
