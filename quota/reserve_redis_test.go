package quota_test

import (
	"context"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/billkit/billkit/internal/testserver"
	"github.com/billkit/billkit/quota"
	"github.com/billkit/billkit/quota/quotatest"
)

// testReserve runs the reservation tests of Q9 and Q10 on the Redis that
// newClient connects to (a redis-server, or a Cluster).
func testReserve(t *testing.T, newClient func(t *testing.T) redis.UniversalClient) {
	t.Run("ExactSettled", func(t *testing.T) { testExactSettled(t, newRedisStore(t, newClient(t))) })
	t.Run("HardLimit", func(t *testing.T) { testReserveHardLimit(t, newRedisStore(t, newClient(t))) })
	t.Run("Crash", func(t *testing.T) { testReserveCrash(t, newClient(t)) })
	t.Run("Ambiguous503", func(t *testing.T) { testAmbiguous503(t, newClient) })
}

// settleHeader carries the amount a test request's handler settles.
const settleHeader = "X-Settle"

// settleFromHeader is a handler that settles the tokens of settleHeader,
// and checks that an allowed reservation never lets what is used and held
// pass the meter's hard limit.
func settleFromHeader(t *testing.T) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.Header.Get(settleHeader), 10, 64)
		if err != nil {
			t.Errorf("bad %s: %v", settleHeader, err)
		}
		d, _ := quota.FromContext(r.Context())
		if rd := d.Reservations()[0]; !rd.Unlimited && rd.Used+rd.Reserved > rd.Limit {
			t.Errorf("allowed with used %d + reserved %d > limit %d", rd.Used, rd.Reserved, rd.Limit)
		}
		if err := quota.Settle(r.Context(), "tokens", n); err != nil {
			t.Errorf("Settle: %v", err)
		}
		w.WriteHeader(http.StatusOK)
	})
}

// hammer sends goroutines × perG requests for subject through h, each
// settling amount(g, rng) tokens, from goroutines of their own, and
// returns the status codes and the sum of what the allowed requests
// settled, and of the excess above est.
func hammer(t *testing.T, h http.Handler, subject string, goroutines, perG int, amount func(*rand.Rand) int64, est int64) (codes map[int]int, settled, excess int64) {
	var mu sync.Mutex
	codes = map[int]int{}
	var sum, over atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1913))
			local := map[int]int{}
			w := &codeWriter{}
			for i := 0; i < perG; i++ {
				n := amount(rng)
				r := httptest.NewRequest(http.MethodPost, "/v1/complete", nil)
				r.Header.Set("X-Subject", subject)
				r.Header.Set(settleHeader, strconv.FormatInt(n, 10))
				w.reset()
				h.ServeHTTP(w, r)
				local[w.code]++
				if w.code == http.StatusOK {
					sum.Add(n)
					over.Add(max(n-est, 0))
				}
			}
			mu.Lock()
			for k, v := range local {
				codes[k] += v
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return codes, sum.Load(), over.Load()
}

func wantUsage(t *testing.T, st quota.Store, subject, meter string, want quota.Usage) {
	t.Helper()
	u, err := st.Usage(context.Background(), subject, meter, quota.CalendarPeriod(quota.Month, time.Now()))
	if err != nil || u != want {
		t.Fatalf("Usage(%s) = %+v, %v; want %+v", meter, u, err, want)
	}
}

// testExactSettled is Q9's exactness: 32 goroutines × 200 requests, each
// reserving 100 tokens and settling a seeded random amount up to 100,
// count exactly the sum settled, and hold nothing afterwards.
func testExactSettled(t *testing.T, st quota.Store) {
	const goroutines, perG = 32, 200
	m := newMiddleware(t, quota.Config{Store: st, Deadline: 5 * time.Second,
		Limits:  meterLimits{"requests": {Plan: "payg", Overage: true}, "tokens": {Plan: "payg", Overage: true}},
		Reserve: []quota.Reservation{{Meter: "tokens", Estimate: fixed(100)}}})
	sub := quotatest.Subject(t)
	codes, settled, _ := hammer(t, m.Handle(settleFromHeader(t)), sub, goroutines, perG, func(r *rand.Rand) int64 { return r.Int64N(101) }, 100)
	m.Close()
	if codes[http.StatusOK] != goroutines*perG {
		t.Fatalf("status codes %v, want only 200", codes)
	}
	wantUsage(t, st, sub, "tokens", quota.Usage{Used: settled})
	wantUsage(t, st, sub, "requests", quota.Usage{Used: goroutines * perG})
	t.Logf("%d requests settled %d tokens", goroutines*perG, settled)
}

// testReserveHardLimit: with a hard limit L on tokens, concurrent
// reservations never let settled usage pass L, unless handlers settle more
// than they reserved, and then by at most what they declared above it.
func testReserveHardLimit(t *testing.T, st quota.Store) {
	const goroutines, perG, est, limit = 32, 200, 100, 60_000
	newMW := func(t *testing.T) *quota.Middleware {
		return newMiddleware(t, quota.Config{Store: st, Deadline: 5 * time.Second,
			Limits:  meterLimits{"requests": {Plan: "pro", Overage: true}, "tokens": {Plan: "pro", Included: limit}},
			Reserve: []quota.Reservation{{Meter: "tokens", Estimate: fixed(est)}}})
	}
	for _, c := range []struct {
		name   string
		amount func(*rand.Rand) int64
	}{
		{"within the estimate", func(r *rand.Rand) int64 { return r.Int64N(est + 1) }},
		{"with excess", func(r *rand.Rand) int64 { return r.Int64N(est*13/10 + 1) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := newMW(t)
			sub := quotatest.Subject(t)
			codes, settled, excess := hammer(t, m.Handle(settleFromHeader(t)), sub, goroutines, perG, c.amount, est)
			m.Close()
			if codes[http.StatusOK]+codes[http.StatusPaymentRequired] != goroutines*perG || codes[http.StatusOK] < limit/est {
				t.Fatalf("status codes %v, want only 200 and 402, and at least %d allowed", codes, limit/est)
			}
			u, err := st.Usage(context.Background(), sub, "tokens", quota.CalendarPeriod(quota.Month, time.Now()))
			if err != nil {
				t.Fatal(err)
			}
			if u.Used != settled || u.Reserved != 0 || u.Used > limit+excess {
				t.Fatalf("Usage(tokens) = %+v after settling %d (%d above the estimates); want Used %d <= %d + %d, nothing held", u, settled, excess, settled, limit, excess)
			}
			if excess == 0 && u.Used > limit {
				t.Fatalf("Used %d > limit %d without any excess settled", u.Used, limit)
			}
			if u.Denied != int64(codes[http.StatusPaymentRequired])*est {
				t.Fatalf("Denied %d, want %d (the estimates of the 402s)", u.Denied, int64(codes[http.StatusPaymentRequired])*est)
			}
			t.Logf("%v; settled %d (excess %d) under %d", codes, settled, excess, limit)
		})
	}
	t.Run("declared excess passes the limit", func(t *testing.T) {
		m := newMW(t)
		sub := quotatest.Subject(t)
		h := m.Handle(settleFromHeader(t))
		send := func(n int64) int {
			r := httptest.NewRequest(http.MethodPost, "/v1/complete", nil)
			r.Header.Set("X-Subject", sub)
			r.Header.Set(settleHeader, strconv.FormatInt(n, 10))
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			m.Close()
			return w.Code
		}
		for i := 0; i < limit/est-1; i++ {
			if code := send(est); code != http.StatusOK {
				t.Fatalf("request %d: status %d", i, code)
			}
		}
		// The last 100 that fit, settled as 130: 30 past the limit.
		if code := send(est + 30); code != http.StatusOK {
			t.Fatalf("last request: status %d", code)
		}
		if code := send(1); code != http.StatusPaymentRequired {
			t.Fatalf("after the limit: status %d, want 402", code)
		}
		wantUsage(t, st, sub, "tokens", quota.Usage{Used: limit + 30, Denied: est})
	})
}

// deadStore drops every Settle: the process died between reserving and
// settling.
type deadStore struct{ quota.Store }

func (deadStore) Settle(context.Context, quota.TakeRequest, []int64) error { return nil }

// testReserveCrash is Q9's bound: reservations of a process that died
// before settling are released once ReservationTTL has passed (by the
// store's clock, fake here), never billed, and their units can be
// reserved again.
func testReserveCrash(t *testing.T, c redis.UniversalClient) {
	clk := newClock(time.Now())
	st, err := quota.NewRedisStore(c, quota.RedisOptions{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	const ttl = 5 * time.Minute
	cfg := quota.Config{Now: clk.Now, ReservationTTL: ttl, Deadline: 5 * time.Second,
		Limits:  meterLimits{"requests": {Included: 1000}, "tokens": {Included: 1000}},
		Reserve: []quota.Reservation{{Meter: "tokens", Estimate: fixed(100)}}}
	cfg.Store = deadStore{st}
	dead := newMiddleware(t, cfg)
	sub := quotatest.Subject(t)
	h := dead.Handle(settling(t, 100))
	for i := 0; i < 10; i++ {
		if w := do(h, sub); w.Code != http.StatusOK {
			t.Fatalf("request %d: status %d", i, w.Code)
		}
	}
	if w := do(h, sub); w.Code != http.StatusPaymentRequired {
		t.Fatalf("with the limit held by unsettled reservations: status %d, want 402", w.Code)
	}
	dead.Close()
	wantUsage(t, st, sub, "tokens", quota.Usage{Reserved: 1000, Denied: 100})
	clk.Add(ttl - time.Second)
	wantUsage(t, st, sub, "tokens", quota.Usage{Reserved: 1000, Denied: 100})
	clk.Add(time.Second)
	wantUsage(t, st, sub, "tokens", quota.Usage{Denied: 100}) // released, nothing billed
	cfg.Store = st
	alive := newMiddleware(t, cfg)
	h = alive.Handle(settling(t, 100))
	for i := 0; i < 10; i++ { // the whole limit fits again
		if w := do(h, sub); w.Code != http.StatusOK {
			t.Fatalf("after the expiry, request %d: status %d", i, w.Code)
		}
	}
	alive.Close()
	wantUsage(t, st, sub, "tokens", quota.Usage{Used: 1000, Denied: 100})
	wantUsage(t, st, sub, "requests", quota.Usage{Used: 20, Denied: 1})
}

// lateReply is a go-redis hook that, while armed, returns every take's
// reply only once the caller's context has ended, after Redis ran the
// script (a reply lost to the deadline: the request is answered 503
// although it was counted), and holds every refund until release is
// closed, so that the test can see what the take counted first.
type lateReply struct {
	armed   atomic.Bool
	release chan struct{}
	refunds atomic.Int32
}

func (h *lateReply) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessPipelineHook holds the pipelines of a store that resolves a lost
// take without ID by itself (see quota.LostTakeResolver), as a refund.
func (h *lateReply) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if args := c.Args(); h.armed.Load() && c.Name() == "eval" && len(args) > 1 && args[1] == quota.ResolveSource {
				h.refunds.Add(1)
				<-h.release
			}
		}
		return next(ctx, cmds)
	}
}

func (h *lateReply) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		script := cmd.Name() == "evalsha" && len(args) > 1
		if script && h.armed.Load() && args[1] == quota.RefundScriptSHA {
			h.refunds.Add(1)
			<-h.release
		}
		err := next(ctx, cmd)
		if err == nil && script && h.armed.Load() && (args[1] == quota.TakeScriptSHA || args[1] == quota.LeanTakeScriptSHA) {
			<-ctx.Done()
			cmd.SetErr(ctx.Err())
			return ctx.Err()
		}
		return err
	}
}

// testAmbiguous503 is Q10: a decision whose deadline passed after Redis
// ran the take is answered 503, its take is refunded, and nothing
// billable (or held) remains; with reservations and without.
func testAmbiguous503(t *testing.T, newClient func(t *testing.T) redis.UniversalClient) {
	for _, reserve := range []bool{false, true} {
		t.Run("reserve="+strconv.FormatBool(reserve), func(t *testing.T) {
			c := newClient(t)
			hook := &lateReply{release: make(chan struct{})}
			c.AddHook(hook)
			st := newRedisStore(t, c)
			cfg := quota.Config{Store: st, Deadline: 200 * time.Millisecond,
				Limits: meterLimits{"requests": {Included: 1000}, "tokens": {Included: 1000}}}
			if reserve {
				cfg.Reserve = []quota.Reservation{{Meter: "tokens", Estimate: fixed(100)}}
			}
			m := newMiddleware(t, cfg)
			var once sync.Once
			release := func() { once.Do(func() { close(hook.release) }) }
			t.Cleanup(release)
			h := m.Handle(settling(t, 0))
			if !reserve {
				h = m.Handle(okHandler())
			}
			sub := quotatest.Subject(t)
			// Load the scripts on the subject's node, then count from zero.
			if w := do(h, sub); w.Code != http.StatusOK {
				t.Fatalf("warm-up: status %d", w.Code)
			}
			m.Close()
			warm := quota.TakeRequest{ID: "warm-up", Subject: sub, Meter: "requests", Period: quota.CalendarPeriod(quota.Month, time.Now()), Cost: 1, Limit: 1}
			warm.ExpireAt = warm.Period.End
			if err := st.Refund(context.Background(), warm); err != nil {
				t.Fatal(err)
			}
			before := quota.Usage{Used: 1}

			hook.armed.Store(true)
			if w := do(h, sub); w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
				t.Fatalf("status %d, want 503 with Retry-After", w.Code)
			}
			// The take did run: its units are counted until the refund.
			wantUsage(t, st, sub, "requests", quota.Usage{Used: before.Used + 1})
			if reserve {
				wantUsage(t, st, sub, "tokens", quota.Usage{Reserved: 100})
			}
			release()
			m.Close()
			waitFor(t, "the store's resolutions", func() bool { return quota.Resolving(st) == 0 })
			if hook.refunds.Load() != 1 {
				t.Fatalf("%d refunds sent, want 1", hook.refunds.Load())
			}
			wantUsage(t, st, sub, "requests", before)
			if reserve {
				wantUsage(t, st, sub, "tokens", quota.Usage{})
			}
		})
	}
}

// TestReserveRoundTrips is Q4 with reservations: a request that reserves
// costs one round trip before its response (the take, which checks and
// reserves every meter), and its settle one more after it, which the
// response never waits for: the settle is held back until the response
// is complete.
func TestReserveRoundTrips(t *testing.T) {
	t.Parallel()
	srv := testserver.StartRedis(t)
	c := redisClient(t, srv.Addr)
	hook := &testserver.CommandHook{}
	c.AddHook(hook)
	gs := &gatedStore{Store: newRedisStore(t, c)}
	m := newMiddleware(t, quota.Config{Store: gs, Limits: quota.StaticLimits{Included: 1 << 40},
		Reserve: []quota.Reservation{{Meter: "tokens", Estimate: fixed(100)}, {Meter: "images", Estimate: fixed(1)}}})
	h := m.Handle(settling(t, 10))
	sub := quotatest.Subject(t)
	path, after := pathTrips(t, m, gs, hook, h, sub, 25)
	if path != 1 || after != 1 {
		t.Fatalf("round trips per request: %v before the response, %v after; want 1 and 1", path, after)
	}
}

// pathTrips sends n requests one at a time and returns the round trips
// per request sent before the response was complete, and after it. Each
// request's settle is held back until its response is complete, so that
// a settle cannot slip into the request's count by being quick.
func pathTrips(t testing.TB, m *quota.Middleware, gs *gatedStore, hook *testserver.CommandHook, h http.Handler, subject string, n int) (path, after float64) {
	r := httptest.NewRequest(http.MethodPost, "/v1/complete", nil)
	r.Header.Set("X-Subject", subject)
	w := &codeWriter{}
	var p, a int64
	for i := 0; i < n; i++ {
		gs.gate = make(chan struct{})
		t0 := hook.RoundTrips()
		w.reset()
		h.ServeHTTP(w, r)
		t1 := hook.RoundTrips()
		close(gs.gate)
		m.Close()
		t2 := hook.RoundTrips()
		if w.code != http.StatusOK {
			t.Fatalf("status %d", w.code)
		}
		if i > 0 { // the first loads the scripts
			p += t1 - t0
			a += t2 - t1
		}
	}
	return float64(p) / float64(n-1), float64(a) / float64(n-1)
}
