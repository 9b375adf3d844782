package quota_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/billkit/billkit/internal/subject"
	"github.com/billkit/billkit/quota"
)

// nov30 is a fake-clock time one day before the end of November 2026.
var nov30 = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)

var november = quota.CalendarPeriod(quota.Month, nov30)

func TestMiddlewareAllowed(t *testing.T) {
	t.Parallel()
	clk := newClock(nov30)
	st := quota.NewMemoryStore(quota.MemoryOptions{Now: clk.Now})
	m := newMiddleware(t, quota.Config{Store: st, Now: clk.Now, Limits: quota.StaticLimits{Plan: "pro", Included: 1000}})
	var got quota.Decision
	var seen bool
	var inner *http.Request
	h := m.Handle(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, seen = quota.FromContext(r.Context())
		inner = r
	}))
	for i := 0; i < 749; i++ {
		do(h, "alice")
	}
	r := httptest.NewRequest(http.MethodGet, "/v1/thing", nil)
	r.Header.Set("X-Subject", "alice")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)

	if w.Code != http.StatusOK {
		t.Fatalf("status %d, want 200", w.Code)
	}
	for name, want := range map[string]string{
		"RateLimit-Policy": `"pro";q=1000;w=2592000`,
		"RateLimit":        `"pro";r=250;t=86400`,
		"Quota-Soft-Limit": "",
		"Retry-After":      "",
	} {
		if got := w.Header().Get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	want := quota.Decision{
		Subject: "alice", Plan: "pro", Meter: "requests", Allowed: true, Cost: 1,
		Limit: 1000, Included: 1000, Used: 750, Remaining: 250, Period: november,
	}
	if !seen || got != want {
		t.Fatalf("FromContext = %+v, %v\nwant %+v", got, seen, want)
	}
	if got.Reset() != time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC) {
		t.Errorf("Reset = %v", got.Reset())
	}
	if inner == r {
		t.Error("the handler got the caller's *http.Request, want a copy")
	}
	if _, ok := quota.FromContext(r.Context()); ok {
		t.Error("the caller's request was changed: it carries a decision")
	}
}

func TestMiddlewareDeniesOverHardLimit(t *testing.T) {
	t.Parallel()
	clk := newClock(nov30.Add(-time.Hour))
	st := quota.NewMemoryStore(quota.MemoryOptions{Now: clk.Now})
	var denials atomic.Int32
	m := newMiddleware(t, quota.Config{
		Store: st, Now: clk.Now, Limits: quota.StaticLimits{Plan: "free", Included: 3},
		OnDeny: func(_ context.Context, d quota.Decision) {
			if d.Allowed || d.Used != 3 {
				t.Errorf("OnDeny got %+v", d)
			}
			denials.Add(1)
		},
	})
	var calls atomic.Int32
	h := m.Handle(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { calls.Add(1) }))
	for i := 0; i < 3; i++ {
		if w := do(h, "bob"); w.Code != http.StatusOK {
			t.Fatalf("request %d: status %d", i, w.Code)
		}
	}
	w := do(h, "bob")
	if w.Code != http.StatusPaymentRequired {
		t.Fatalf("status %d, want 402", w.Code)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q", ct)
	}
	if got, want := w.Header().Get("Retry-After"), strconv.Itoa(25*3600); got != want {
		t.Errorf("Retry-After %q, want %q (seconds to the period's end)", got, want)
	}
	if got, want := w.Header().Get("RateLimit"), `"free";r=0;t=90000`; got != want {
		t.Errorf("RateLimit %q, want %q", got, want)
	}
	var body map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %s: %v", w.Body, err)
	}
	for k, want := range map[string]any{
		"type": quota.ProblemQuotaExceeded, "status": 402.0, "limit": 3.0, "used": 3.0,
		"reset": "2026-12-01T00:00:00Z", "violated-policies": []any{"free"},
	} {
		if fmt.Sprint(body[k]) != fmt.Sprint(want) {
			t.Errorf("body[%q] = %v, want %v", k, body[k], want)
		}
	}
	if calls.Load() != 3 || denials.Load() != 1 {
		t.Errorf("handler called %d times, OnDeny %d; want 3 and 1", calls.Load(), denials.Load())
	}
	u, _ := st.Usage(context.Background(), "bob", "requests", november)
	if u != (quota.Usage{Used: 3, Denied: 1}) {
		t.Errorf("Usage = %+v, want Used 3 Denied 1", u)
	}
}

// errStore is a Store whose Take fails, counting its calls.
type errStore struct {
	quota.Store
	err   error
	calls atomic.Int32
}

func (s *errStore) Take(context.Context, quota.TakeRequest) (quota.TakeResult, error) {
	s.calls.Add(1)
	return quota.TakeResult{}, s.err
}

// Refund fails like Take: the store is down.
func (s *errStore) Refund(context.Context, quota.TakeRequest) error { return s.err }

func TestMiddlewareBadInput(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom: secret internal detail")
	pro := quota.StaticLimits{Plan: "pro", Included: 100}
	cases := []struct {
		name     string
		subject  string
		cfg      quota.Config
		status   int
		typ      string
		retry    bool
		failOpen bool // also run with FailOpen: the status must not change
	}{
		{name: "missing subject", subject: "", status: 401, typ: "about:blank", failOpen: true},
		{name: "subject func error", subject: "x", cfg: quota.Config{Subject: func(*http.Request) (string, error) { return "alice", boom }}, status: 401, typ: "about:blank", failOpen: true},
		{name: "zero cost", subject: "alice", cfg: quota.Config{Cost: func(*http.Request) (int64, error) { return 0, nil }}, status: 500, typ: "about:blank", failOpen: true},
		{name: "negative cost", subject: "alice", cfg: quota.Config{Cost: func(*http.Request) (int64, error) { return -3, nil }}, status: 500, typ: "about:blank", failOpen: true},
		{name: "cost error", subject: "alice", cfg: quota.Config{Cost: func(*http.Request) (int64, error) { return 1, boom }}, status: 500, typ: "about:blank", failOpen: true},
		{name: "subject with brace", subject: "al{ice}", status: 500, typ: "about:blank", failOpen: true},
		{name: "overlong subject", subject: strings.Repeat("a", subject.MaxLen+1), status: 500, typ: "about:blank", failOpen: true},
		{name: "subject with brace, plan allowing nothing", subject: "al{ice}", cfg: quota.Config{Limits: quota.StaticLimits{Plan: "none"}}, status: 500, typ: "about:blank", failOpen: true},
		{name: "subject with control character", subject: "al\tice", status: 500, typ: "about:blank", failOpen: true},
		{name: "no plan", subject: "alice", cfg: quota.Config{Limits: quota.LimitsFunc(func(context.Context, string, string) (quota.Limits, error) {
			return quota.Limits{}, fmt.Errorf("billing: subject alice: %w", quota.ErrNoPlan)
		})}, status: 402, typ: quota.ProblemNoPlan, failOpen: true},
		{name: "limits source error", subject: "alice", cfg: quota.Config{Limits: quota.LimitsFunc(func(context.Context, string, string) (quota.Limits, error) {
			return quota.Limits{}, boom
		})}, status: 503, typ: "about:blank", retry: true},
		{name: "store error", subject: "alice", cfg: quota.Config{Store: &errStore{err: boom}}, status: 503, typ: "about:blank", retry: true},
	}
	for _, c := range cases {
		for _, failOpen := range []bool{false, true} {
			if failOpen && !c.failOpen {
				continue
			}
			t.Run(fmt.Sprintf("%s/failOpen=%v", c.name, failOpen), func(t *testing.T) {
				t.Parallel()
				st := quota.NewMemoryStore(quota.MemoryOptions{})
				cfg := c.cfg
				cfg.FailOpen = failOpen
				if cfg.Store == nil {
					cfg.Store = st
				}
				if cfg.Limits == nil {
					cfg.Limits = pro
				}
				var called bool
				h := newMiddleware(t, cfg).Handle(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true }))
				w := do(h, c.subject)
				if w.Code != c.status || called {
					t.Fatalf("status %d (handler called: %v), want %d and not called", w.Code, called, c.status)
				}
				if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
					t.Errorf("Content-Type %q", ct)
				}
				var p struct {
					Type   string
					Title  string
					Status int
					Detail string
				}
				if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Type != c.typ || p.Status != c.status || p.Title == "" || p.Detail == "" {
					t.Errorf("problem %s (%v), want type %q status %d with title and detail", w.Body, err, c.typ, c.status)
				}
				if strings.Contains(w.Body.String(), "boom") || strings.Contains(w.Body.String(), "billing:") {
					t.Errorf("problem body leaks an internal error: %s", w.Body)
				}
				if got := w.Header().Get("Retry-After"); (got != "") != c.retry {
					t.Errorf("Retry-After %q, want present: %v", got, c.retry)
				}
				if quota.MemoryLen(st) != 0 {
					t.Errorf("store holds %d counters, want nothing counted", quota.MemoryLen(st))
				}
			})
		}
	}
}

func TestMiddlewareFailOpen(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		cfg  quota.Config
	}{
		{"store error", quota.Config{Store: &errStore{err: errors.New("down")}, Limits: quota.StaticLimits{Included: 1}}},
		{"limits error", quota.Config{Store: quota.NewMemoryStore(quota.MemoryOptions{}), Limits: quota.LimitsFunc(func(context.Context, string, string) (quota.Limits, error) {
			return quota.Limits{}, errors.New("cache cold")
		})}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cfg := c.cfg
			cfg.FailOpen = true
			var d quota.Decision
			h := newMiddleware(t, cfg).Handle(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				d, _ = quota.FromContext(r.Context())
			}))
			if w := do(h, "alice"); w.Code != http.StatusOK {
				t.Fatalf("status %d, want 200 (fail-open)", w.Code)
			}
			if !d.Allowed || !d.Degraded || d.Subject != "alice" {
				t.Fatalf("decision %+v, want allowed and degraded", d)
			}
		})
	}
}

// slowStore blocks until its context ends, and records the deadline.
type slowStore struct {
	quota.Store
	mu       sync.Mutex
	deadline time.Time
	start    time.Time
}

// Refund succeeds at once: these tests time the decision, not the refund.
func (s *slowStore) Refund(context.Context, quota.TakeRequest) error { return nil }

func (s *slowStore) Take(ctx context.Context, _ quota.TakeRequest) (quota.TakeResult, error) {
	s.mu.Lock()
	s.start = time.Now()
	s.deadline, _ = ctx.Deadline()
	s.mu.Unlock()
	<-ctx.Done()
	return quota.TakeResult{}, ctx.Err()
}

// TestMiddlewareDeadline: the store's context ends at the deadline, and
// the decision comes within twice the deadline. Not parallel, like every
// test that times a decision (see [assertDecidedWithin]).
func TestMiddlewareDeadline(t *testing.T) {
	for _, c := range []struct {
		set, want time.Duration
	}{{0, quota.DefaultDeadline}, {50 * time.Millisecond, 50 * time.Millisecond}} {
		t.Run(c.want.String(), func(t *testing.T) {
			t.Parallel()
			st := &slowStore{}
			h := newMiddleware(t, quota.Config{Store: st, Deadline: c.set, Limits: quota.StaticLimits{Included: 5}}).Handle(okHandler())
			start := time.Now()
			w := do(h, "alice")
			elapsed := time.Since(start)
			if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "1" {
				t.Fatalf("status %d Retry-After %q, want 503 and 1", w.Code, w.Header().Get("Retry-After"))
			}
			st.mu.Lock()
			defer st.mu.Unlock()
			if st.deadline.IsZero() || st.deadline.Sub(st.start) > c.want || st.deadline.Sub(start) < c.want {
				t.Errorf("store context deadline %v after start, want %v", st.deadline.Sub(start), c.want)
			}
			assertDecidedWithin(t, elapsed, c.want)
		})
	}
}

// TestMiddlewareParentDeadline: a request whose context ends sooner than
// Deadline is decided within its own deadline; one whose context ends later
// still gets Deadline. Not parallel: it times decisions.
func TestMiddlewareParentDeadline(t *testing.T) {
	for _, c := range []struct {
		name             string
		parent, deadline time.Duration
	}{
		{"parent sooner", 50 * time.Millisecond, time.Minute},
		{"parent later", time.Minute, 50 * time.Millisecond},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			st := &slowStore{}
			h := newMiddleware(t, quota.Config{Store: st, Deadline: c.deadline, Limits: quota.StaticLimits{Included: 5}}).Handle(okHandler())
			ctx, cancel := context.WithTimeout(context.Background(), c.parent)
			defer cancel()
			parentDeadline, _ := ctx.Deadline()
			r := httptest.NewRequestWithContext(ctx, http.MethodGet, "/v1/thing", nil)
			r.Header.Set("X-Subject", "alice")
			w := httptest.NewRecorder()
			start := time.Now()
			h.ServeHTTP(w, r)
			if w.Code != http.StatusServiceUnavailable {
				t.Fatalf("status %d, want 503", w.Code)
			}
			want := min(c.parent, c.deadline)
			st.mu.Lock()
			defer st.mu.Unlock()
			if c.parent < c.deadline {
				if !st.deadline.Equal(parentDeadline) {
					t.Errorf("store context deadline %v, want the request's %v", st.deadline, parentDeadline)
				}
			} else if st.deadline.IsZero() || st.deadline.Sub(start) < want || st.deadline.Sub(st.start) > want {
				t.Errorf("store context deadline %v after start, want %v", st.deadline.Sub(start), want)
			}
			assertDecidedWithin(t, time.Since(start), want)
		})
	}
}

func TestMiddlewareSoftLimit(t *testing.T) {
	t.Parallel()
	lim := quota.StaticLimits{Plan: "pro", Included: 100, Soft: 3}
	t.Run("sequential", func(t *testing.T) {
		t.Parallel()
		var hooks []quota.Decision
		m := newMiddleware(t, quota.Config{Store: quota.NewMemoryStore(quota.MemoryOptions{}), Limits: lim,
			OnSoftLimit: func(_ context.Context, d quota.Decision) { hooks = append(hooks, d) }})
		h := m.Handle(okHandler())
		for i := 1; i <= 6; i++ {
			w := do(h, "alice")
			if w.Code != http.StatusOK {
				t.Fatalf("request %d: status %d; a soft limit must not block", i, w.Code)
			}
			got := w.Header().Get("Quota-Soft-Limit")
			if want := map[bool]string{true: "3", false: ""}[i >= 3]; got != want {
				t.Errorf("request %d: Quota-Soft-Limit %q, want %q", i, got, want)
			}
		}
		if len(hooks) != 1 || hooks[0].Used != 3 || !hooks[0].SoftLimitCrossed {
			t.Fatalf("OnSoftLimit calls %+v, want one, at Used 3", hooks)
		}
	})
	t.Run("cost jumps over the threshold", func(t *testing.T) {
		t.Parallel()
		var n int
		m := newMiddleware(t, quota.Config{Store: quota.NewMemoryStore(quota.MemoryOptions{}), Limits: lim,
			Cost:        func(*http.Request) (int64, error) { return 2, nil },
			OnSoftLimit: func(context.Context, quota.Decision) { n++ }})
		h := m.Handle(okHandler())
		for i := 0; i < 5; i++ { // 2, 4 (crosses 3), 6, 8, 10
			do(h, "alice")
		}
		if n != 1 {
			t.Fatalf("OnSoftLimit called %d times, want 1", n)
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		t.Parallel()
		_, c := miniredisClient(t)
		var n atomic.Int32
		// A deadline far above any scheduling delay: under a loaded
		// -race run a 100 ms decision could time out, and a request that
		// is not counted may keep the count below the threshold.
		m := newMiddleware(t, quota.Config{Store: newRedisStore(t, c), Limits: quota.StaticLimits{Included: 1000, Soft: 50},
			Deadline:    10 * time.Second,
			OnSoftLimit: func(context.Context, quota.Decision) { n.Add(1) }})
		h := m.Handle(okHandler())
		var wg sync.WaitGroup
		var failed atomic.Int32
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 20; i++ {
					if do(h, "alice").Code != http.StatusOK {
						failed.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		if f := failed.Load(); f != 0 {
			t.Fatalf("%d of 160 requests failed", f)
		}
		if n.Load() != 1 {
			t.Fatalf("OnSoftLimit called %d times by concurrent requests, want exactly 1", n.Load())
		}
	})
}

func TestMiddlewareOverage(t *testing.T) {
	t.Parallel()
	t.Run("capped", func(t *testing.T) {
		t.Parallel()
		st := quota.NewMemoryStore(quota.MemoryOptions{})
		var last quota.Decision
		h := newMiddleware(t, quota.Config{Store: st, Limits: quota.StaticLimits{Plan: "team", Included: 5, Hard: 8, Overage: true}}).
			Handle(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { last, _ = quota.FromContext(r.Context()) }))
		for i := 1; i <= 8; i++ {
			if w := do(h, "alice"); w.Code != http.StatusOK {
				t.Fatalf("request %d: status %d, want 200 up to Hard", i, w.Code)
			}
		}
		if last.Used != 8 || last.Overage != 3 || last.Limit != 8 {
			t.Fatalf("decision %+v, want Used 8, Overage 3, Limit 8", last)
		}
		if w := do(h, "alice"); w.Code != http.StatusPaymentRequired {
			t.Fatalf("request 9: status %d, want 402 above Hard", w.Code)
		}
		u, _ := st.Usage(context.Background(), "alice", "requests", quota.CalendarPeriod(quota.Month, time.Now()))
		if u != (quota.Usage{Used: 8, Denied: 1}) {
			t.Fatalf("Usage %+v: overage must be billable, the denial not", u)
		}
	})
	t.Run("uncapped", func(t *testing.T) {
		t.Parallel()
		var last quota.Decision
		h := newMiddleware(t, quota.Config{Store: quota.NewMemoryStore(quota.MemoryOptions{}), Limits: quota.StaticLimits{Included: 2, Overage: true}}).
			Handle(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { last, _ = quota.FromContext(r.Context()) }))
		var w *httptest.ResponseRecorder
		for i := 0; i < 10; i++ {
			if w = do(h, "alice"); w.Code != http.StatusOK {
				t.Fatalf("status %d, want 200 (no cap)", w.Code)
			}
		}
		if last.Overage != 8 || last.Remaining != -1 || last.Limit != 0 || !last.Unlimited {
			t.Fatalf("decision %+v, want Overage 8, Remaining -1, Limit 0, Unlimited", last)
		}
		if w.Header().Get("RateLimit") != "" || w.Header().Get("RateLimit-Policy") != "" {
			t.Errorf("RateLimit fields on an uncapped plan: %v", w.Header())
		}
	})
}

// TestMiddlewarePeriodRollover moves a fake clock across a month's end: the
// count restarts and the closed month stays readable.
func TestMiddlewarePeriodRollover(t *testing.T) {
	t.Parallel()
	end := quota.CalendarPeriod(quota.Month, time.Now()).End // a real month end, so Redis expiries lie ahead
	stores := map[string]func(*clock) quota.Store{
		"Memory": func(c *clock) quota.Store { return quota.NewMemoryStore(quota.MemoryOptions{Now: c.Now}) },
		"Miniredis": func(*clock) quota.Store {
			_, c := miniredisClient(t)
			return newRedisStore(t, c)
		},
	}
	for name, newStore := range stores {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			clk := newClock(end.Add(-time.Second))
			st := newStore(clk)
			var last quota.Decision
			h := newMiddleware(t, quota.Config{Store: st, Now: clk.Now, Limits: quota.StaticLimits{Plan: "pro", Included: 5}}).
				Handle(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { last, _ = quota.FromContext(r.Context()) }))
			for i := 0; i < 5; i++ {
				do(h, "alice")
			}
			if w := do(h, "alice"); w.Code != http.StatusPaymentRequired || w.Header().Get("Retry-After") != "1" {
				t.Fatalf("status %d Retry-After %q, want 402 and 1", w.Code, w.Header().Get("Retry-After"))
			}
			old := last.Period
			clk.Set(end)
			if w := do(h, "alice"); w.Code != http.StatusOK {
				t.Fatalf("after the month's end: status %d, want 200", w.Code)
			}
			if last.Used != 1 || last.Period.Start != end {
				t.Fatalf("after the month's end: decision %+v, want Used 1 in the new period", last)
			}
			clk.Add(20 * 24 * time.Hour)
			u, err := st.Usage(context.Background(), "alice", "requests", old)
			if err != nil || u != (quota.Usage{Used: 5, Denied: 1}) {
				t.Fatalf("closed period Usage = %+v, %v; want Used 5, Denied 1", u, err)
			}
		})
	}
}

func TestMiddlewareExplicitPeriod(t *testing.T) {
	t.Parallel()
	clk := newClock(time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC))
	billing := quota.Period{Start: time.Date(2026, 11, 15, 9, 30, 0, 0, time.UTC), End: time.Date(2026, 12, 15, 9, 30, 0, 0, time.UTC)}
	st := quota.NewMemoryStore(quota.MemoryOptions{Now: clk.Now})
	h := newMiddleware(t, quota.Config{Store: st, Now: clk.Now, Limits: quota.StaticLimits{Plan: "pro", Included: 10, Period: billing}}).Handle(okHandler())
	w := do(h, "alice")
	if got, want := w.Header().Get("RateLimit-Policy"), `"pro";q=10;w=2592000`; got != want {
		t.Errorf("RateLimit-Policy %q, want %q", got, want)
	}
	if got, want := w.Header().Get("RateLimit"), fmt.Sprintf(`"pro";r=9;t=%d`, int(billing.End.Sub(clk.Now()).Seconds())); got != want {
		t.Errorf("RateLimit %q, want %q", got, want)
	}
	if u, _ := st.Usage(context.Background(), "alice", "requests", billing); u.Used != 1 {
		t.Errorf("Usage of the explicit period = %+v, want Used 1", u)
	}
	// Past the explicit period (not renewed yet), the calendar month counts.
	clk.Set(billing.End.Add(time.Hour))
	do(h, "alice")
	if u, _ := st.Usage(context.Background(), "alice", "requests", quota.CalendarPeriod(quota.Month, clk.Now())); u.Used != 1 {
		t.Errorf("Usage of the fallback calendar period = %+v, want Used 1", u)
	}
}

func TestMiddlewareCustomDeny(t *testing.T) {
	t.Parallel()
	h := newMiddleware(t, quota.Config{Store: quota.NewMemoryStore(quota.MemoryOptions{}), Limits: quota.StaticLimits{Plan: "free", Included: 1},
		Deny: func(w http.ResponseWriter, r *http.Request, d quota.Decision) {
			if fd, ok := quota.FromContext(r.Context()); !ok || fd != d {
				t.Errorf("request context carries %+v, %v; want the decision", fd, ok)
			}
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprintf(w, "used %d of %d", d.Used, d.Limit)
		}}).Handle(okHandler())
	do(h, "alice")
	w := do(h, "alice")
	if w.Code != http.StatusTooManyRequests || w.Body.String() != "used 1 of 1" || w.Header().Get("Retry-After") == "" {
		t.Fatalf("status %d body %q headers %v", w.Code, w.Body, w.Header())
	}
}

// TestMiddlewareHeaderValuesIndependent: a DenyFunc (or handler) that adds
// to the middleware's header fields changes only the field it adds to.
func TestMiddlewareHeaderValuesIndependent(t *testing.T) {
	t.Parallel()
	h := newMiddleware(t, quota.Config{Store: quota.NewMemoryStore(quota.MemoryOptions{}), Limits: quota.StaticLimits{Plan: "free", Included: 1},
		Deny: func(w http.ResponseWriter, r *http.Request, d quota.Decision) {
			w.Header().Add("RateLimit", `"other";r=5;t=10`)
			w.Header().Add("Retry-After", "7")
			w.WriteHeader(http.StatusTooManyRequests)
		}}).Handle(okHandler())
	do(h, "alice")
	w := do(h, "alice")
	rl, ra := w.Header().Values("RateLimit"), w.Header().Values("Retry-After")
	if len(rl) != 2 || !strings.HasPrefix(rl[0], `"free";r=0;t=`) || rl[1] != `"other";r=5;t=10` {
		t.Errorf("RateLimit = %q, want the middleware's value and the added one", rl)
	}
	if len(ra) != 2 || ra[0] == "" || ra[0] == `"other";r=5;t=10` || ra[1] != "7" {
		t.Errorf("Retry-After = %q, want the middleware's value and 7", ra)
	}
}

// TestMiddlewareHeaderValuesNotShared: a handler, DenyFunc or outer
// ResponseWriter that overwrites the values it finds in the header map
// (h[k][0] = ...) changes its own response only. A value slice shared
// between responses (such as a cached RateLimit-Policy []string) would
// carry one request's write into every later response (and be a data race
// between concurrent requests): every request checks, before it tampers,
// that its values are the middleware's own, which fails deterministically
// on a shared slot, whether or not -race sees the accesses unordered (the
// store's lock often orders them).
func TestMiddlewareHeaderValuesNotShared(t *testing.T) {
	t.Parallel()
	const goroutines, perG = 8, 100
	tamper := func(t *testing.T, h http.Header, want map[string]string) {
		for k, v := range want {
			got := h[k]
			if len(got) != 1 || got[0] != v {
				t.Errorf("%s = %q before this request wrote to it, want [%q]", k, got, v)
				continue
			}
			got[0] = "tampered"
		}
	}
	clk := newClock(nov30)
	for _, c := range []struct {
		name   string
		cfg    quota.Config
		status int
		want   map[string]string
	}{
		{"allowed", quota.Config{Limits: quota.StaticLimits{Plan: "pro", Included: 1 << 40, Soft: 1}}, http.StatusOK, map[string]string{
			"Ratelimit-Policy": `"pro";q=1099511627776;w=2592000`,
			"Quota-Soft-Limit": "1",
		}},
		{"denied", quota.Config{Limits: quota.StaticLimits{Plan: "none"}}, http.StatusPaymentRequired, map[string]string{
			"Ratelimit-Policy": `"none";q=0;w=2592000`,
			"Ratelimit":        `"none";r=0;t=86400`,
			"Retry-After":      "86400",
		}},
		{"unavailable", quota.Config{Store: &errStore{err: errors.New("down")}, Limits: quota.StaticLimits{Included: 5}}, http.StatusServiceUnavailable, map[string]string{
			"Retry-After": "1",
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cfg := c.cfg
			cfg.Now = clk.Now
			if cfg.Store == nil {
				cfg.Store = quota.NewMemoryStore(quota.MemoryOptions{Now: clk.Now})
			}
			// Allowed requests tamper in the handler, denied ones in the
			// DenyFunc, 503s in the ResponseWriter (the middleware calls
			// neither of the others).
			cfg.Deny = func(w http.ResponseWriter, r *http.Request, d quota.Decision) {
				tamper(t, w.Header(), c.want)
				w.WriteHeader(http.StatusPaymentRequired)
			}
			h := newMiddleware(t, cfg).Handle(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if rl := w.Header().Get("Ratelimit"); !strings.HasPrefix(rl, `"pro";r=`) {
					t.Errorf("RateLimit = %q before this request wrote to it", rl)
				}
				w.Header()["Ratelimit"][0] = "tampered"
				tamper(t, w.Header(), c.want)
				w.WriteHeader(http.StatusOK)
			}))
			var wg sync.WaitGroup
			for g := 0; g < goroutines; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < perG; i++ {
						w := &tamperWriter{onWriteHeader: func(h http.Header) {
							if c.status == http.StatusServiceUnavailable {
								tamper(t, h, c.want)
							}
						}}
						r := httptest.NewRequest(http.MethodGet, "/v1/thing", nil)
						r.Header.Set("X-Subject", "alice")
						h.ServeHTTP(w, r)
						if w.code != c.status {
							t.Errorf("status %d, want %d", w.code, c.status)
							return
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}

// tamperWriter is a codeWriter that calls onWriteHeader with the header
// map when the status is written.
type tamperWriter struct {
	codeWriter
	onWriteHeader func(http.Header)
}

func (w *tamperWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.onWriteHeader(w.Header())
	}
	w.codeWriter.WriteHeader(code)
}

func TestMiddlewarePolicyName(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ plan, want string }{
		{"", `"requests";q=5;w=2592000`},
		{`we"ird\`, `"we\"ird\\";q=5;w=2592000`},
		{"übung", `"??bung";q=5;w=2592000`},
	} {
		clk := newClock(nov30)
		h := newMiddleware(t, quota.Config{Store: quota.NewMemoryStore(quota.MemoryOptions{Now: clk.Now}), Now: clk.Now,
			Limits: quota.StaticLimits{Plan: c.plan, Included: 5}}).Handle(okHandler())
		if got := do(h, "alice").Header().Get("RateLimit-Policy"); got != c.want {
			t.Errorf("plan %q: RateLimit-Policy %s, want %s", c.plan, got, c.want)
		}
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	st := quota.NewMemoryStore(quota.MemoryOptions{})
	lim := quota.StaticLimits{Included: 1}
	for _, c := range []struct {
		name    string
		cfg     quota.Config
		mention string // the field the error names
	}{
		{"no subject", quota.Config{Limits: lim, Store: st}, "Subject"},
		{"no limits", quota.Config{Subject: headerSubject, Store: st}, "Limits"},
		{"no store", quota.Config{Subject: headerSubject, Limits: lim}, "Store"},
		{"bad meter", quota.Config{Subject: headerSubject, Limits: lim, Store: st, Meter: "a:b"}, "Meter"},
		{"negative deadline", quota.Config{Subject: headerSubject, Limits: lim, Store: st, Deadline: -time.Second}, "Deadline"},
		{"negative retention", quota.Config{Subject: headerSubject, Limits: lim, Store: st, Retention: -time.Second}, "Retention"},
		{"negative retry after", quota.Config{Subject: headerSubject, Limits: lim, Store: st, RetryAfter: -time.Second}, "RetryAfter"},
	} {
		_, err := quota.New(c.cfg)
		if !errors.Is(err, quota.ErrInvalidConfig) {
			t.Errorf("%s: New error = %v, want ErrInvalidConfig", c.name, err)
		} else if !strings.Contains(err.Error(), c.mention) {
			t.Errorf("%s: New error %q does not name %s", c.name, err, c.mention)
		}
	}
}

// TestMiddlewareZeroLimitDeniesAll: a plan whose effective hard limit is
// zero (the zero Limits, or a Hard without overage above Included 0) allows
// nothing. Zero must not be read as "no cap".
func TestMiddlewareZeroLimitDeniesAll(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		lim  quota.Limits
	}{
		{"zero value", quota.Limits{}},
		{"named plan without units", quota.Limits{Plan: "none"}},
		{"hard without overage", quota.Limits{Plan: "capped", Hard: 50}},
		{"negative included", quota.Limits{Plan: "neg", Included: -5}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			clk := newClock(nov30)
			st := quota.NewMemoryStore(quota.MemoryOptions{Now: clk.Now})
			var calls atomic.Int32
			h := newMiddleware(t, quota.Config{Store: st, Now: clk.Now, Limits: quota.StaticLimits(c.lim)}).
				Handle(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { calls.Add(1) }))
			for i := 0; i < 3; i++ {
				w := do(h, "alice")
				if w.Code != http.StatusPaymentRequired {
					t.Fatalf("request %d: status %d, want 402", i, w.Code)
				}
				if got := w.Header().Get("Retry-After"); got != "86400" {
					t.Errorf("Retry-After %q, want 86400", got)
				}
				if got := w.Header().Get("RateLimit"); !strings.HasSuffix(got, ";r=0;t=86400") {
					t.Errorf("RateLimit %q, want r=0", got)
				}
			}
			if calls.Load() != 0 {
				t.Fatalf("handler called %d times, want 0", calls.Load())
			}
			if u, _ := st.Usage(context.Background(), "alice", "requests", november); u != (quota.Usage{}) {
				t.Errorf("Usage = %+v, want nothing counted (the store is not asked)", u)
			}
		})
	}
}

func TestLimitsLimit(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		lim       quota.Limits
		limit     int64
		unlimited bool
	}{
		{quota.Limits{}, 0, false},
		{quota.Limits{Included: 100}, 100, false},
		{quota.Limits{Included: 100, Hard: 150}, 100, false},
		{quota.Limits{Included: 100, Hard: 80}, 80, false},
		{quota.Limits{Hard: 50}, 0, false},
		{quota.Limits{Included: -5}, 0, false},
		{quota.Limits{Included: 100, Hard: 150, Overage: true}, 150, false},
		{quota.Limits{Included: 100, Overage: true}, 0, true},
		{quota.Limits{Overage: true}, 0, true},
	} {
		if got := c.lim.Limit(); got != c.limit {
			t.Errorf("%+v.Limit() = %d, want %d", c.lim, got, c.limit)
		}
		if got := c.lim.Unlimited(); got != c.unlimited {
			t.Errorf("%+v.Unlimited() = %v, want %v", c.lim, got, c.unlimited)
		}
	}
}

// TestMiddlewareContextPropagates: the request context that the handler
// sees keeps the caller's values and cancellation, and carries the decision.
func TestMiddlewareContextPropagates(t *testing.T) {
	t.Parallel()
	type key struct{}
	m := newMiddleware(t, quota.Config{Store: quota.NewMemoryStore(quota.MemoryOptions{}), Limits: quota.StaticLimits{Included: 10}})
	parent, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
	var inner context.Context
	h := m.Handle(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { inner = r.Context() }))
	r := httptest.NewRequest(http.MethodGet, "/", nil).WithContext(parent)
	r.Header.Set("X-Subject", "alice")
	h.ServeHTTP(httptest.NewRecorder(), r)
	if inner == nil {
		t.Fatal("handler not called")
	}
	if d, ok := quota.FromContext(inner); !ok || d.Used != 1 {
		t.Errorf("FromContext = %+v, %v; want the decision", d, ok)
	}
	if got := inner.Value(key{}); got != "v" {
		t.Errorf("caller's context value = %v, want v", got)
	}
	child, cancelChild := context.WithCancel(inner)
	defer cancelChild()
	cancel()
	select {
	case <-inner.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("handler's context not canceled with the caller's")
	}
	select {
	case <-child.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a context derived in the handler not canceled with the caller's")
	}
	if !errors.Is(context.Cause(child), context.Canceled) {
		t.Errorf("Cause = %v, want context.Canceled", context.Cause(child))
	}
}

// TestLoggerDefault: a nil Config.Logger logs to slog.Default(). Not
// parallel: it swaps the process's default logger.
func TestLoggerDefault(t *testing.T) {
	var buf strings.Builder
	var mu sync.Mutex
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&lockedWriter{mu: &mu, w: &buf}, nil)))
	t.Cleanup(func() { slog.SetDefault(prev) })
	m, err := quota.New(quota.Config{
		Subject: headerSubject,
		Limits:  quota.StaticLimits{Included: 1},
		Store:   quota.NewMemoryStore(quota.MemoryOptions{}),
		Cost:    func(*http.Request) (int64, error) { return 0, errors.New("no cost") },
	})
	if err != nil {
		t.Fatal(err)
	}
	if w := do(m.Handle(okHandler()), "alice"); w.Code != http.StatusInternalServerError {
		t.Fatalf("status %d, want 500", w.Code)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(buf.String(), "quota: cost function failed") {
		t.Fatalf("slog.Default() got %q, want the cost function's failure", buf.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}
