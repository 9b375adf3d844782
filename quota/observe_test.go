package quota_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/billkit/billkit/quota"
)

// recorder collects observations, safe for concurrent use.
type recorder struct {
	mu  sync.Mutex
	obs []quota.Observation
	bg  []quota.BackgroundObservation
}

func (r *recorder) observer() quota.Observer {
	return quota.Observer{
		Decided: func(_ context.Context, o quota.Observation) {
			r.mu.Lock()
			r.obs = append(r.obs, o)
			r.mu.Unlock()
		},
		Background: func(_ context.Context, b quota.BackgroundObservation) {
			r.mu.Lock()
			r.bg = append(r.bg, b)
			r.mu.Unlock()
		},
	}
}

func (r *recorder) decisions() []quota.Observation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.obs)
}

func (r *recorder) background() []quota.BackgroundObservation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.bg)
}

// TestObserverOutcomes drives every outcome of the middleware through its
// real code paths and checks the one observation each produces: its
// outcome, status, plan and meter, and that it names no subject.
func TestObserverOutcomes(t *testing.T) {
	t.Parallel()
	boom := errors.New("store down")
	pro := quota.StaticLimits{Plan: "pro", Included: 2, Soft: 1}
	noPlan := quota.LimitsFunc(func(context.Context, string, string) (quota.Limits, error) {
		return quota.Limits{}, quota.ErrNoPlan
	})
	tokensFull := quota.LimitsFunc(func(_ context.Context, _, meter string) (quota.Limits, error) {
		if meter == "tokens" {
			return quota.Limits{Plan: "pro-tokens", Included: 10}, nil
		}
		return quota.Limits{Plan: "pro", Overage: true}, nil
	})
	cases := []struct {
		name    string
		cfg     quota.Config
		subject string
		want    quota.Observation // Duration and Err are checked apart
		err     bool              // Err is set
		timed   bool              // Duration > 0
	}{
		{name: "allowed, soft limit crossed", cfg: quota.Config{Limits: pro},
			subject: "alice", want: quota.Observation{Outcome: quota.Allowed, Plan: "pro", Meter: "requests", SoftLimitCrossed: true}, timed: true},
		{name: "unauthenticated", cfg: quota.Config{Limits: pro},
			want: quota.Observation{Outcome: quota.Unauthenticated, Status: http.StatusUnauthorized, Meter: "requests"}},
		{name: "no plan", cfg: quota.Config{Limits: noPlan},
			subject: "alice", want: quota.Observation{Outcome: quota.NoPlan, Status: http.StatusPaymentRequired, Meter: "requests"}, timed: true},
		{name: "cost function failed", cfg: quota.Config{Limits: pro, Cost: func(*http.Request) (int64, error) { return 0, boom }},
			subject: "alice", want: quota.Observation{Outcome: quota.Failed, Status: http.StatusInternalServerError, Meter: "requests"}, err: true},
		{name: "estimate failed", cfg: quota.Config{Limits: pro, Reserve: []quota.Reservation{{Meter: "tokens", Estimate: func(*http.Request) (int64, error) { return 0, boom }}}},
			subject: "alice", want: quota.Observation{Outcome: quota.Failed, Status: http.StatusInternalServerError, Meter: "tokens"}, err: true},
		{name: "store down, fail-closed", cfg: quota.Config{Limits: pro, Store: &errStore{err: boom}},
			subject: "alice", want: quota.Observation{Outcome: quota.Unavailable, Status: http.StatusServiceUnavailable, Plan: "pro", Meter: "requests"}, err: true, timed: true},
		{name: "store down, fail-open", cfg: quota.Config{Limits: pro, Store: &errStore{err: boom}, FailOpen: true},
			subject: "alice", want: quota.Observation{Outcome: quota.FailOpen, Plan: "pro", Meter: "requests"}, err: true, timed: true},
		{name: "denied by a reserved meter", cfg: quota.Config{Limits: tokensFull, Reserve: []quota.Reservation{{Meter: "tokens", Estimate: fixed(11)}}},
			subject: "alice", want: quota.Observation{Outcome: quota.Denied, Status: http.StatusPaymentRequired, Plan: "pro-tokens", Meter: "tokens"}, timed: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var rec recorder
			tc.cfg.Observer = rec.observer()
			if tc.cfg.Store == nil {
				tc.cfg.Store = quota.NewMemoryStore(quota.MemoryOptions{})
			}
			m := newMiddleware(t, tc.cfg)
			w := do(m.Handle(okHandler()), tc.subject)
			got := rec.decisions()
			if len(got) != 1 {
				t.Fatalf("%d observations, want 1: %+v", len(got), got)
			}
			o := got[0]
			if want := tc.want.Status; want != 0 && w.Code != want || want == 0 && w.Code != http.StatusOK {
				t.Errorf("response status %d, observation %+v", w.Code, o)
			}
			if (o.Err != nil) != tc.err {
				t.Errorf("Err = %v, want set: %v", o.Err, tc.err)
			}
			if tc.timed && o.Duration <= 0 || !tc.timed && o.Duration != 0 {
				t.Errorf("Duration = %v, want > 0: %v", o.Duration, tc.timed)
			}
			o.Err, o.Duration = nil, 0
			if o != tc.want {
				t.Errorf("observation = %+v, want %+v", o, tc.want)
			}
			if tc.subject != "" && (strings.Contains(o.Plan, tc.subject) || strings.Contains(o.Meter, tc.subject)) {
				t.Errorf("observation %+v names the subject", o)
			}
		})
	}
}

// TestObserverDeniedOverRequestMeter checks the request meter's own denial
// and that only the crossing request reports SoftLimitCrossed.
func TestObserverDeniedOverRequestMeter(t *testing.T) {
	t.Parallel()
	var rec recorder
	m := newMiddleware(t, quota.Config{Limits: quota.StaticLimits{Plan: "free", Included: 3, Soft: 2},
		Store: quota.NewMemoryStore(quota.MemoryOptions{}), Observer: rec.observer()})
	h := m.Handle(okHandler())
	for range 4 {
		do(h, "bob")
	}
	var outcomes []string
	var crossed []bool
	for _, o := range rec.decisions() {
		outcomes = append(outcomes, o.Outcome.String()+"/"+o.Meter+"/"+o.Plan)
		crossed = append(crossed, o.SoftLimitCrossed)
	}
	want := []string{"allowed/requests/free", "allowed/requests/free", "allowed/requests/free", "denied/requests/free"}
	if !slices.Equal(outcomes, want) {
		t.Errorf("outcomes %v, want %v", outcomes, want)
	}
	if !slices.Equal(crossed, []bool{false, true, false, false}) {
		t.Errorf("SoftLimitCrossed %v, want only the second request", crossed)
	}
}

// TestObserverBackground checks that settles and refunds sent after a
// response are observed, failed or not.
func TestObserverBackground(t *testing.T) {
	t.Parallel()
	var rec recorder
	lim := quota.StaticLimits{Plan: "pro", Overage: true}
	m := newMiddleware(t, quota.Config{Limits: lim, Store: quota.NewMemoryStore(quota.MemoryOptions{}),
		Reserve: []quota.Reservation{{Meter: "tokens", Estimate: fixed(5)}}, Observer: rec.observer()})
	do(m.Handle(okHandler()), "alice")
	boom := errors.New("down")
	failing := newMiddleware(t, quota.Config{Limits: lim, Store: &errStore{err: boom}, Observer: rec.observer()})
	do(failing.Handle(okHandler()), "alice") // 503, then a refund that fails
	m.Close()
	failing.Close()
	got := rec.background()
	slices.SortFunc(got, func(a, b quota.BackgroundObservation) int { return strings.Compare(a.Op, b.Op) })
	if len(got) != 2 || got[0].Op != "refund" || !errors.Is(got[0].Err, boom) || got[1].Op != "settle" || got[1].Err != nil {
		t.Fatalf("background observations %+v, want a failed refund and a settle", got)
	}
}

// TestObserverNoAllocations checks the hot path's promise: an observer
// adds no allocation to an allowed request (its funcs here allocate
// nothing themselves), and neither does an unset one.
func TestObserverNoAllocations(t *testing.T) {
	lim := quota.StaticLimits{Plan: "pro", Overage: true}
	allocs := func(obs quota.Observer) float64 {
		m := newMiddleware(t, quota.Config{Limits: lim, Store: quota.NewMemoryStore(quota.MemoryOptions{}),
			Observer: obs, Deadline: time.Hour})
		h := m.Handle(okHandler())
		r := httptest.NewRequest(http.MethodGet, "/v1/thing", nil)
		r.Header.Set("X-Subject", "alice")
		w := &codeWriter{}
		return testing.AllocsPerRun(200, func() {
			w.reset()
			h.ServeHTTP(w, r)
		})
	}
	var n int
	unset := allocs(quota.Observer{})
	set := allocs(quota.Observer{Decided: func(_ context.Context, o quota.Observation) {
		if o.Outcome == quota.Allowed {
			n++
		}
	}})
	if n == 0 {
		t.Fatal("the observer was not called")
	}
	if set != unset {
		t.Errorf("allocations per request: %v with an observer, %v without", set, unset)
	}
	t.Logf("allocations per allowed request: %v with or without an observer", unset)
}

func TestOutcomeString(t *testing.T) {
	t.Parallel()
	want := map[quota.Outcome]string{quota.Allowed: "allowed", quota.Denied: "denied", quota.NoPlan: "no_plan",
		quota.Unavailable: "unavailable", quota.FailOpen: "fail_open", quota.Unauthenticated: "unauthenticated",
		quota.Failed: "failed", 0: "unknown", 200: "unknown"}
	for o, s := range want {
		if o.String() != s {
			t.Errorf("Outcome(%d).String() = %q, want %q", o, o.String(), s)
		}
	}
}
