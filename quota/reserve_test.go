package quota_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/billkit/billkit/quota"
)

// meterLimits gives each meter its own limits; a meter it does not list
// gets the zero Limits (the plan does not include it).
type meterLimits map[string]quota.Limits

func (l meterLimits) Limits(_ context.Context, _, meter string) (quota.Limits, error) {
	return l[meter], nil
}

// fixed is an Estimate of n units.
func fixed(n int64) quota.CostFunc {
	return func(*http.Request) (int64, error) { return n, nil }
}

// settling is a handler that settles n tokens.
func settling(t testing.TB, n int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := quota.Settle(r.Context(), "tokens", n); err != nil {
			t.Errorf("Settle: %v", err)
		}
		w.WriteHeader(http.StatusOK)
	})
}

// sfList parses a RateLimit or RateLimit-Policy field of this package's
// making (an RFC 9651 list of strings with integer parameters) into the
// member names, in order, and each member's parameters.
func sfList(t *testing.T, v string) ([]string, map[string]map[string]int64) {
	t.Helper()
	var names []string
	params := map[string]map[string]int64{}
	for _, member := range strings.Split(v, ",") {
		parts := strings.Split(strings.TrimSpace(member), ";")
		name, err := strconv.Unquote(parts[0])
		if err != nil {
			t.Fatalf("list member %q: name %s is not a string: %v", member, parts[0], err)
		}
		names = append(names, name)
		params[name] = map[string]int64{}
		for _, p := range parts[1:] {
			k, val, ok := strings.Cut(p, "=")
			n, err := strconv.ParseInt(val, 10, 64)
			if !ok || err != nil {
				t.Fatalf("list member %q: parameter %q is not key=integer", member, p)
			}
			params[name][k] = n
		}
	}
	return names, params
}

// TestReserveHeaders is Q8 with reservations: every capped meter is one
// member of RateLimit-Policy and RateLimit, named after the meter, with
// its own quota, window, remaining units (used and held both count) and
// reset; the headers are parsed back.
func TestReserveHeaders(t *testing.T) {
	t.Parallel()
	clk := newClock(nov30.Add(6 * time.Hour))
	st := quota.NewMemoryStore(quota.MemoryOptions{Now: clk.Now})
	lim := meterLimits{
		"requests": {Plan: "pro", Included: 1000},
		"tokens":   {Plan: "pro", Included: 50_000, Interval: quota.Day},
		"images":   {Plan: "pro", Overage: true}, // no cap: no list member
	}
	var seen []quota.Decision
	m := newMiddleware(t, quota.Config{Store: st, Now: clk.Now, Limits: lim,
		Reserve: []quota.Reservation{{Meter: "tokens", Estimate: fixed(100)}, {Meter: "images", Estimate: fixed(2)}}})
	h := m.Handle(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, _ := quota.FromContext(r.Context())
		seen = append(seen, d)
		quota.Settle(r.Context(), "tokens", 40)
		quota.Settle(r.Context(), "images", 1)
	}))
	type member struct{ q, w, r, t int64 }
	check := func(w *httptest.ResponseRecorder, want map[string]member) {
		t.Helper()
		pnames, pol := sfList(t, w.Header().Get("RateLimit-Policy"))
		rnames, rl := sfList(t, w.Header().Get("RateLimit"))
		if strings.Join(pnames, " ") != "requests tokens" || strings.Join(rnames, " ") != "requests tokens" {
			t.Fatalf("members %v and %v, want requests and tokens, in this order (images has no cap)", pnames, rnames)
		}
		for name, want := range want {
			got := member{pol[name]["q"], pol[name]["w"], rl[name]["r"], rl[name]["t"]}
			if got != want {
				t.Errorf("%s: q=%d w=%d r=%d t=%d, want %+v", name, got.q, got.w, got.r, got.t, want)
			}
		}
	}
	w := do(h, "alice")
	if w.Code != http.StatusOK {
		t.Fatalf("status %d", w.Code)
	}
	check(w, map[string]member{
		"requests": {q: 1000, w: 30 * 86400, r: 999, t: 18 * 3600},
		"tokens":   {q: 50_000, w: 86400, r: 50_000 - 100, t: 18 * 3600},
	})
	m.Close()
	w = do(h, "alice")
	check(w, map[string]member{
		"requests": {q: 1000, w: 30 * 86400, r: 998, t: 18 * 3600},
		"tokens":   {q: 50_000, w: 86400, r: 50_000 - 40 - 100, t: 18 * 3600},
	})
	m.Close()

	d := seen[1]
	rs := d.Reservations()
	today := quota.CalendarPeriod(quota.Day, clk.Now())
	want := []quota.ReservationDecision{
		{Meter: "tokens", Plan: "pro", Estimate: 100, Limit: 50_000, Included: 50_000, Used: 40, Reserved: 100, Remaining: 49_860, Period: today},
		{Meter: "images", Plan: "pro", Estimate: 2, Unlimited: true, Used: 1, Reserved: 2, Remaining: -1, Period: november},
	}
	if len(rs) != 2 || rs[0] != want[0] || rs[1] != want[1] {
		t.Fatalf("Reservations() = %+v\nwant %+v", rs, want)
	}
	if d.Used != 2 || d.Remaining != 998 || d.Exhausted != "" {
		t.Fatalf("decision %+v, want Used 2, Remaining 998", d)
	}
	for meter, want := range map[string]quota.Usage{"requests": {Used: 2}, "tokens": {Used: 80}, "images": {Used: 2}} {
		p := november
		if meter == "tokens" {
			p = today
		}
		if u, _ := st.Usage(context.Background(), "alice", meter, p); u != want {
			t.Errorf("Usage(%s) = %+v, want %+v", meter, u, want)
		}
	}
}

// TestReserveDenied: a reservation that does not fit answers 402 naming
// the meter, counts nothing billable, and never runs the handler.
func TestReserveDenied(t *testing.T) {
	t.Parallel()
	type problem struct {
		Type             string
		Status           int
		Meter            string
		ViolatedPolicies []string `json:"violated-policies"`
		Limit, Used      int64
		Reserved         int64
		Reset            string
	}
	clk := newClock(nov30.Add(6 * time.Hour))
	for _, c := range []struct {
		name       string
		lim        meterLimits
		before     int // allowed requests before, each settling 100
		want       problem
		retryAfter string
		usage      map[string]quota.Usage
	}{
		{
			name: "tokens exhausted", before: 1,
			lim: meterLimits{"requests": {Plan: "pro", Included: 10}, "tokens": {Plan: "pro", Included: 150, Interval: quota.Day}},
			want: problem{Type: quota.ProblemQuotaExceeded, Status: 402, Meter: "tokens", ViolatedPolicies: []string{"tokens"},
				Limit: 150, Used: 100, Reset: "2026-12-01T00:00:00Z"},
			retryAfter: strconv.Itoa(18 * 3600),
			usage:      map[string]quota.Usage{"requests": {Used: 1, Denied: 1}, "tokens": {Used: 100, Denied: 100}},
		},
		{
			name: "requests exhausted", before: 1,
			lim: meterLimits{"requests": {Plan: "pro", Included: 1}, "tokens": {Plan: "pro", Included: 1000}},
			want: problem{Type: quota.ProblemQuotaExceeded, Status: 402, Meter: "requests", ViolatedPolicies: []string{"requests"},
				Limit: 1, Used: 1, Reset: "2026-12-01T00:00:00Z"},
			retryAfter: strconv.Itoa(18 * 3600),
			usage:      map[string]quota.Usage{"requests": {Used: 1, Denied: 1}, "tokens": {Used: 100, Denied: 100}},
		},
		{
			name: "meter not in the plan",
			lim:  meterLimits{"requests": {Plan: "pro", Included: 10}},
			want: problem{Type: quota.ProblemQuotaExceeded, Status: 402, Meter: "tokens", ViolatedPolicies: []string{"tokens"},
				Limit: 0, Used: 0, Reset: "2026-12-01T00:00:00Z"},
			retryAfter: strconv.Itoa(18 * 3600),
			usage:      map[string]quota.Usage{"requests": {}, "tokens": {}}, // the store is not asked
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			st := quota.NewMemoryStore(quota.MemoryOptions{Now: clk.Now})
			var calls atomic.Int32
			var denied quota.Decision
			m := newMiddleware(t, quota.Config{Store: st, Now: clk.Now, Limits: c.lim,
				Reserve: []quota.Reservation{{Meter: "tokens", Estimate: fixed(100)}},
				OnDeny:  func(_ context.Context, d quota.Decision) { denied = d }})
			h := m.Handle(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				quota.Settle(r.Context(), "tokens", 100)
			}))
			for i := 0; i < c.before; i++ {
				if w := do(h, "alice"); w.Code != http.StatusOK {
					t.Fatalf("request %d: status %d", i, w.Code)
				}
			}
			m.Close()
			w := do(h, "alice")
			m.Close()
			if w.Code != http.StatusPaymentRequired || int(calls.Load()) != c.before {
				t.Fatalf("status %d, handler called %d times; want 402 and %d", w.Code, calls.Load(), c.before)
			}
			if got := w.Header().Get("Retry-After"); got != c.retryAfter {
				t.Errorf("Retry-After %q, want %q (to the end of the exhausted meter's period)", got, c.retryAfter)
			}
			var p problem
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
				t.Fatalf("body %s: %v", w.Body, err)
			}
			if p.Type != c.want.Type || p.Status != c.want.Status || p.Meter != c.want.Meter ||
				strings.Join(p.ViolatedPolicies, ",") != strings.Join(c.want.ViolatedPolicies, ",") ||
				p.Limit != c.want.Limit || p.Used != c.want.Used || p.Reserved != c.want.Reserved {
				t.Errorf("problem %+v\nwant %+v", p, c.want)
			}
			if denied.Exhausted != c.want.Meter || denied.Allowed {
				t.Errorf("OnDeny decision %+v, want denied by %s", denied, c.want.Meter)
			}
			for meter, want := range c.usage {
				p := november
				if meter == "tokens" && c.lim["tokens"].Interval == quota.Day {
					p = quota.CalendarPeriod(quota.Day, clk.Now())
				}
				if u, _ := st.Usage(context.Background(), "alice", meter, p); u != want {
					t.Errorf("Usage(%s) = %+v, want %+v", meter, u, want)
				}
			}
		})
	}
}

// TestSingleMeterProblemNamesMeter: without reservations the 402 names
// the request meter too, and the headers keep their single-member form.
func TestSingleMeterProblemNamesMeter(t *testing.T) {
	t.Parallel()
	h := newMiddleware(t, quota.Config{Store: quota.NewMemoryStore(quota.MemoryOptions{}), Limits: quota.StaticLimits{Plan: "free", Included: 1}}).Handle(okHandler())
	do(h, "alice")
	w := do(h, "alice")
	var p struct {
		Meter            string
		ViolatedPolicies []string `json:"violated-policies"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || w.Code != 402 || p.Meter != "requests" || len(p.ViolatedPolicies) != 1 || p.ViolatedPolicies[0] != "free" {
		t.Fatalf("status %d body %s: want 402 naming meter requests, policy free", w.Code, w.Body)
	}
	if got := w.Header().Get("RateLimit-Policy"); !strings.HasPrefix(got, `"free";q=1;w=`) || strings.Contains(got, ",") {
		t.Fatalf("RateLimit-Policy %q, want the single member of plan free", got)
	}
}

// TestSettle covers what a handler may settle: less (the rest released),
// more (the excess counted, past the hard limit), nothing (the estimate),
// several times (the last wins), after a panic (what was settled), and the
// misuses Settle refuses.
func TestSettle(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name    string
		handler func(t *testing.T, r *http.Request)
		used    int64
	}{
		{"less", func(t *testing.T, r *http.Request) { mustSettle(t, r, 30) }, 30},
		{"zero", func(t *testing.T, r *http.Request) { mustSettle(t, r, 0) }, 0},
		{"more, past the hard limit", func(t *testing.T, r *http.Request) { mustSettle(t, r, 130) }, 130},
		{"not at all: the estimate", func(t *testing.T, r *http.Request) {}, 100},
		{"twice: the last", func(t *testing.T, r *http.Request) { mustSettle(t, r, 10); mustSettle(t, r, 20) }, 20},
		{"concurrently", func(t *testing.T, r *http.Request) {
			var wg sync.WaitGroup
			for i := 0; i < 4; i++ {
				wg.Add(1)
				go func() { defer wg.Done(); mustSettle(t, r, 7) }()
			}
			wg.Wait()
		}, 7},
		{"then panic", func(t *testing.T, r *http.Request) { mustSettle(t, r, 60); panic(http.ErrAbortHandler) }, 60},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			st := quota.NewMemoryStore(quota.MemoryOptions{})
			m := newMiddleware(t, quota.Config{Store: st, Limits: meterLimits{"requests": {Included: 10}, "tokens": {Included: 100}},
				Reserve: []quota.Reservation{{Meter: "tokens", Estimate: fixed(100)}}})
			h := m.Handle(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { c.handler(t, r) }))
			func() {
				defer func() { recover() }()
				do(h, "alice")
			}()
			m.Close()
			p := quota.CalendarPeriod(quota.Month, time.Now())
			if u, _ := st.Usage(context.Background(), "alice", "tokens", p); u != (quota.Usage{Used: c.used}) {
				t.Fatalf("Usage(tokens) = %+v, want Used %d and nothing held", u, c.used)
			}
			if c.used > 100 {
				if w := do(h, "alice"); w.Code != http.StatusPaymentRequired {
					t.Fatalf("after an excess settle: status %d, want 402", w.Code)
				}
			}
		})
	}
	t.Run("misuse", func(t *testing.T) {
		t.Parallel()
		st := quota.NewMemoryStore(quota.MemoryOptions{})
		m := newMiddleware(t, quota.Config{Store: st, Limits: quota.StaticLimits{Included: 1000},
			Reserve: []quota.Reservation{{Meter: "tokens", Estimate: fixed(100)}}})
		var kept context.Context
		h := m.Handle(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			kept = r.Context()
			for _, c := range []struct {
				meter string
				n     int64
			}{{"images", 1}, {"requests", 1}, {"tokens", -1}} {
				if err := quota.Settle(r.Context(), c.meter, c.n); !errors.Is(err, quota.ErrInvalidSettle) {
					t.Errorf("Settle(%s, %d) = %v, want ErrInvalidSettle", c.meter, c.n, err)
				}
			}
		}))
		do(h, "alice")
		if err := quota.Settle(kept, "tokens", 5); !errors.Is(err, quota.ErrInvalidSettle) {
			t.Errorf("Settle after the handler returned = %v, want ErrInvalidSettle", err)
		}
		if err := quota.Settle(context.Background(), "tokens", 5); !errors.Is(err, quota.ErrInvalidSettle) {
			t.Errorf("Settle outside a request = %v, want ErrInvalidSettle", err)
		}
		plain := newMiddleware(t, quota.Config{Store: st, Limits: quota.StaticLimits{Included: 1000}})
		plain.Handle(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := quota.Settle(r.Context(), "tokens", 5); !errors.Is(err, quota.ErrInvalidSettle) {
				t.Errorf("Settle behind a middleware without reservations = %v, want ErrInvalidSettle", err)
			}
		})).ServeHTTP(httptest.NewRecorder(), func() *http.Request {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("X-Subject", "bob")
			return r
		}())
		m.Close()
		if u, _ := st.Usage(context.Background(), "alice", "tokens", quota.CalendarPeriod(quota.Month, time.Now())); u != (quota.Usage{Used: 100}) {
			t.Fatalf("Usage(tokens) = %+v, want the estimate (the misuses changed nothing)", u)
		}
	})
}

func mustSettle(t *testing.T, r *http.Request, n int64) {
	t.Helper()
	if err := quota.Settle(r.Context(), "tokens", n); err != nil {
		t.Errorf("Settle(%d): %v", n, err)
	}
}

// gatedStore holds every Settle until its gate is closed.
type gatedStore struct {
	quota.Store
	gate    chan struct{}
	settles atomic.Int32
}

func (s *gatedStore) Settle(ctx context.Context, req quota.TakeRequest, used []int64) error {
	<-s.gate
	s.settles.Add(1)
	return s.Store.Settle(ctx, req, used)
}

// TestSettleOffRequestPath: the response is complete while the settle is
// still waiting (it is sent after the handler, in the background); Close
// waits for it, and no goroutine outlives Close.
func TestSettleOffRequestPath(t *testing.T) {
	t.Parallel()
	gs := &gatedStore{Store: quota.NewMemoryStore(quota.MemoryOptions{}), gate: make(chan struct{})}
	m := newMiddleware(t, quota.Config{Store: gs, Limits: quota.StaticLimits{Included: 1 << 20},
		Reserve: []quota.Reservation{{Meter: "tokens", Estimate: fixed(100)}}})
	var once sync.Once
	release := func() { once.Do(func() { close(gs.gate) }) }
	t.Cleanup(release) // runs before the middleware's Close, should the test fail
	h := m.Handle(settling(t, 10))
	before := runtime.NumGoroutine()
	const n = 20
	for i := 0; i < n; i++ {
		if w := do(h, "alice"); w.Code != http.StatusOK { // returns with the settle held
			t.Fatalf("status %d", w.Code)
		}
	}
	if got := m.Pending(); got != n || gs.settles.Load() != 0 {
		t.Fatalf("%d settles pending and %d done with the gate shut, want %d and 0", got, gs.settles.Load(), n)
	}
	closed := make(chan struct{})
	go func() { m.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned while settles were pending")
	case <-time.After(10 * time.Millisecond):
	}
	release()
	<-closed
	if m.Pending() != 0 || gs.settles.Load() != n {
		t.Fatalf("after Close: %d pending, %d settled; want 0 and %d", m.Pending(), gs.settles.Load(), n)
	}
	if u, _ := gs.Usage(context.Background(), "alice", "tokens", quota.CalendarPeriod(quota.Month, time.Now())); u != (quota.Usage{Used: 10 * n}) {
		t.Fatalf("Usage(tokens) = %+v, want Used %d", u, 10*n)
	}
	assertGoroutinesSettle(t, before)
}

// lostReply is a Store whose Take counts and then fails as a reply lost to
// the deadline would: the request is answered 503 although it was counted.
type lostReply struct {
	quota.Store
	refunds atomic.Int32
}

func (s *lostReply) Take(ctx context.Context, req quota.TakeRequest) (quota.TakeResult, error) {
	if _, err := s.Store.Take(ctx, req); err != nil {
		return quota.TakeResult{}, err
	}
	return quota.TakeResult{}, context.DeadlineExceeded
}

func (s *lostReply) Refund(ctx context.Context, req quota.TakeRequest) error {
	s.refunds.Add(1)
	return s.Store.Refund(ctx, req)
}

// TestRefundOnUnavailable is Q10 with the memory store: a 503 whose take
// was counted is refunded, so nothing billable (or held) remains; with
// fail-open the request passes uncounted, and what its handler settles is
// not counted either.
func TestRefundOnUnavailable(t *testing.T) {
	t.Parallel()
	for _, failOpen := range []bool{false, true} {
		t.Run("failOpen="+strconv.FormatBool(failOpen), func(t *testing.T) {
			t.Parallel()
			st := &lostReply{Store: quota.NewMemoryStore(quota.MemoryOptions{})}
			var called atomic.Int32
			m := newMiddleware(t, quota.Config{Store: st, Limits: quota.StaticLimits{Included: 1000}, FailOpen: failOpen,
				Reserve: []quota.Reservation{{Meter: "tokens", Estimate: fixed(100)}}})
			h := m.Handle(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				called.Add(1)
				if d, _ := quota.FromContext(r.Context()); !d.Degraded {
					t.Errorf("decision %+v, want Degraded", d)
				}
				if err := quota.Settle(r.Context(), "tokens", 50); err != nil {
					t.Errorf("Settle in a degraded request: %v", err)
				}
			}))
			want := map[bool]int{false: http.StatusServiceUnavailable, true: http.StatusOK}[failOpen]
			for i := 0; i < 5; i++ {
				if w := do(h, "alice"); w.Code != want {
					t.Fatalf("status %d, want %d", w.Code, want)
				}
			}
			m.Close()
			if st.refunds.Load() != 5 {
				t.Fatalf("%d refunds, want 5", st.refunds.Load())
			}
			p := quota.CalendarPeriod(quota.Month, time.Now())
			for _, meter := range []string{"requests", "tokens"} {
				if u, _ := st.Usage(context.Background(), "alice", meter, p); u != (quota.Usage{}) {
					t.Errorf("Usage(%s) = %+v, want nothing counted or held", meter, u)
				}
			}
			if int(called.Load()) != map[bool]int{false: 0, true: 5}[failOpen] {
				t.Errorf("handler called %d times", called.Load())
			}
		})
	}
}

func TestNewValidatesReserve(t *testing.T) {
	t.Parallel()
	st := quota.NewMemoryStore(quota.MemoryOptions{})
	base := quota.Config{Subject: headerSubject, Limits: quota.StaticLimits{Included: 1}, Store: st}
	for _, c := range []struct {
		name    string
		edit    func(*quota.Config)
		mention string
	}{
		{"bad meter", func(c *quota.Config) { c.Reserve = []quota.Reservation{{Meter: "a:b", Estimate: fixed(1)}} }, "Reserve[0].Meter"},
		{"request meter", func(c *quota.Config) { c.Reserve = []quota.Reservation{{Meter: "requests", Estimate: fixed(1)}} }, "Reserve[0].Meter"},
		{"twice", func(c *quota.Config) {
			c.Reserve = []quota.Reservation{{Meter: "tokens", Estimate: fixed(1)}, {Meter: "tokens", Estimate: fixed(1)}}
		}, "Reserve[1].Meter"},
		{"no estimate", func(c *quota.Config) { c.Reserve = []quota.Reservation{{Meter: "tokens"}} }, "Reserve[0].Estimate"},
		{"negative TTL", func(c *quota.Config) { c.ReservationTTL = -time.Second }, "ReservationTTL"},
	} {
		cfg := base
		c.edit(&cfg)
		if _, err := quota.New(cfg); !errors.Is(err, quota.ErrInvalidConfig) || !strings.Contains(err.Error(), c.mention) {
			t.Errorf("%s: New error = %v, want ErrInvalidConfig naming %s", c.name, err, c.mention)
		}
	}
}

// TestReserveEstimateFails: a failing or non-positive estimate is a
// server bug: 500, nothing counted.
func TestReserveEstimateFails(t *testing.T) {
	t.Parallel()
	for _, est := range []quota.CostFunc{fixed(0), fixed(-1), func(*http.Request) (int64, error) { return 5, errors.New("boom") }} {
		st := quota.NewMemoryStore(quota.MemoryOptions{})
		h := newMiddleware(t, quota.Config{Store: st, Limits: quota.StaticLimits{Included: 1000},
			Reserve: []quota.Reservation{{Meter: "tokens", Estimate: est}}}).Handle(okHandler())
		if w := do(h, "alice"); w.Code != http.StatusInternalServerError {
			t.Fatalf("status %d, want 500", w.Code)
		}
		if quota.MemoryLen(st) != 0 {
			t.Fatalf("store holds %d counters, want nothing counted", quota.MemoryLen(st))
		}
	}
}
