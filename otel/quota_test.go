package billkitotel_test

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/billkit/billkit/quota"
)

// subject is the account every test meters; it must appear in no metric.
const subject = "acct_secret_42"

// downStore is a quota.Store whose every call fails, as a Redis that is
// down.
type downStore struct{}

var errDown = errors.New("store down")

func (downStore) Take(context.Context, quota.TakeRequest) (quota.TakeResult, error) {
	return quota.TakeResult{}, errDown
}
func (downStore) Settle(context.Context, quota.TakeRequest, []int64) error { return errDown }
func (downStore) Refund(context.Context, quota.TakeRequest) error          { return errDown }
func (downStore) Usage(context.Context, string, string, quota.Period) (quota.Usage, error) {
	return quota.Usage{}, errDown
}

func TestQuotaOutcomes(t *testing.T) {
	t.Parallel()
	authenticated := func(*http.Request) (string, error) { return subject, nil }
	tests := []struct {
		name     string
		cfg      quota.Config
		requests int
		settle   bool // the handler settles the "tokens" reservation
		statuses []int
		// want are the points of billkit.quota.decisions, wantDur those
		// of billkit.quota.decision.duration, wantSoft those of
		// billkit.quota.soft_limit.crossings and wantBg those of
		// billkit.quota.background.calls; nil means no point at all.
		want, wantSoft, wantBg map[string]int64
		wantDur                map[string]uint64
	}{{
		name: "allowed and denied",
		cfg: quota.Config{
			Subject: authenticated,
			Limits:  quota.StaticLimits{Plan: "pro", Included: 2, Soft: 1},
			Store:   quota.NewMemoryStore(quota.MemoryOptions{}),
		},
		requests: 3,
		statuses: []int{200, 200, 402},
		want: map[string]int64{
			"billkit.meter=requests,billkit.outcome=allowed,billkit.plan=pro": 2,
			"billkit.meter=requests,billkit.outcome=denied,billkit.plan=pro":  1,
		},
		wantDur:  map[string]uint64{"billkit.outcome=allowed": 2, "billkit.outcome=denied": 1},
		wantSoft: map[string]int64{"billkit.meter=requests,billkit.plan=pro": 1},
	}, {
		name: "no plan",
		cfg: quota.Config{
			Subject: authenticated,
			Limits: quota.LimitsFunc(func(context.Context, string, string) (quota.Limits, error) {
				return quota.Limits{}, quota.ErrNoPlan
			}),
			Store: quota.NewMemoryStore(quota.MemoryOptions{}),
		},
		requests: 1,
		statuses: []int{402},
		want:     map[string]int64{"billkit.meter=requests,billkit.outcome=no_plan": 1},
		wantDur:  map[string]uint64{"billkit.outcome=no_plan": 1},
	}, {
		name: "unauthenticated",
		cfg: quota.Config{
			Subject: func(*http.Request) (string, error) { return "", nil },
			Limits:  quota.StaticLimits{Plan: "pro", Included: 2},
			Store:   quota.NewMemoryStore(quota.MemoryOptions{}),
		},
		requests: 1,
		statuses: []int{401},
		want:     map[string]int64{"billkit.meter=requests,billkit.outcome=unauthenticated": 1},
		// No decision was attempted: no duration.
	}, {
		name: "unavailable",
		cfg: quota.Config{
			Subject: authenticated,
			Limits:  quota.StaticLimits{Plan: "pro", Included: 2},
			Store:   downStore{},
		},
		requests: 1,
		statuses: []int{503},
		want:     map[string]int64{"billkit.meter=requests,billkit.outcome=unavailable,billkit.plan=pro": 1},
		wantDur:  map[string]uint64{"billkit.outcome=unavailable": 1},
		// The take may have counted: the middleware refunds it, and the
		// refund fails too.
		wantBg: map[string]int64{"billkit.operation=refund,billkit.outcome=failed": 1},
	}, {
		name: "fail open",
		cfg: quota.Config{
			Subject:  authenticated,
			Limits:   quota.StaticLimits{Plan: "pro", Included: 2},
			Store:    downStore{},
			FailOpen: true,
		},
		requests: 1,
		statuses: []int{200},
		want:     map[string]int64{"billkit.meter=requests,billkit.outcome=fail_open,billkit.plan=pro": 1},
		wantDur:  map[string]uint64{"billkit.outcome=fail_open": 1},
		wantBg:   map[string]int64{"billkit.operation=refund,billkit.outcome=failed": 1},
	}, {
		name: "failed cost function",
		cfg: quota.Config{
			Subject: authenticated,
			Limits:  quota.StaticLimits{Plan: "pro", Included: 2},
			Store:   quota.NewMemoryStore(quota.MemoryOptions{}),
			Cost:    func(*http.Request) (int64, error) { return 0, errors.New("no cost") },
		},
		requests: 1,
		statuses: []int{500},
		want:     map[string]int64{"billkit.meter=requests,billkit.outcome=failed": 1},
	}, {
		name: "reservation settled",
		cfg: quota.Config{
			Subject: authenticated,
			Limits:  quota.StaticLimits{Plan: "ai", Included: 1000},
			Store:   quota.NewMemoryStore(quota.MemoryOptions{}),
			Reserve: []quota.Reservation{{Meter: "tokens", Estimate: func(*http.Request) (int64, error) { return 100, nil }}},
		},
		requests: 2,
		settle:   true,
		statuses: []int{200, 200},
		want:     map[string]int64{"billkit.meter=requests,billkit.outcome=allowed,billkit.plan=ai": 2},
		wantDur:  map[string]uint64{"billkit.outcome=allowed": 2},
		wantBg:   map[string]int64{"billkit.operation=settle,billkit.outcome=ok": 2},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tm := newTelemetry(t)
			cfg := tt.cfg
			cfg.Observer = tm.Quota()
			cfg.Logger = quiet
			mw, err := quota.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			h := mw.Handle(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.settle {
					if err := quota.Settle(r.Context(), "tokens", 60); err != nil {
						t.Error(err)
					}
				}
			}))
			for i := range tt.requests {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/things", nil))
				if rec.Code != tt.statuses[i] {
					t.Errorf("request %d: status %d, want %d", i, rec.Code, tt.statuses[i])
				}
			}
			mw.Close() // waits for the settles and refunds

			checkSums(t, tm, "billkit.quota.decisions", tt.want)
			checkCounts(t, tm, "billkit.quota.decision.duration", tt.wantDur)
			checkSums(t, tm, "billkit.quota.soft_limit.crossings", tt.wantSoft)
			checkSums(t, tm, "billkit.quota.background.calls", tt.wantBg)
			var wantBgDur map[string]uint64
			for k, n := range tt.wantBg {
				if wantBgDur == nil {
					wantBgDur = map[string]uint64{}
				}
				wantBgDur[k] = uint64(n)
			}
			checkCounts(t, tm, "billkit.quota.background.duration", wantBgDur)
			tm.assertNowhere(t, true, subject)
		})
	}
}

// checkSums checks the points of the counter name against want; a nil
// want means the counter has no point.
func checkSums(t *testing.T, tm *telemetry, name string, want map[string]int64) {
	t.Helper()
	if want == nil {
		if hasMetric(t, tm, name) {
			t.Errorf("%s: %v, want no point", name, tm.sums(t, name))
		}
		return
	}
	if got := tm.sums(t, name); !maps.Equal(got, want) {
		t.Errorf("%s: %v, want %v", name, got, want)
	}
}

// checkCounts checks the counts of the histogram name against want; a
// nil want means the histogram has no point.
func checkCounts(t *testing.T, tm *telemetry, name string, want map[string]uint64) {
	t.Helper()
	if want == nil {
		if hasMetric(t, tm, name) {
			t.Errorf("%s: %v, want no point", name, tm.counts(t, name))
		}
		return
	}
	if got := tm.counts(t, name); !maps.Equal(got, want) {
		t.Errorf("%s: %v, want %v", name, got, want)
	}
}

// hasMetric reports whether name has a data point.
func hasMetric(t *testing.T, tm *telemetry, name string) bool {
	t.Helper()
	for _, m := range tm.collect(t) {
		if m.Name == name {
			return true
		}
	}
	return false
}

// TestQuotaSpanEvent checks that a decision is added to the request's span
// as an event, without the subject.
func TestQuotaSpanEvent(t *testing.T) {
	t.Parallel()
	tm := newTelemetry(t)
	mw, err := quota.New(quota.Config{
		Subject:  func(*http.Request) (string, error) { return subject, nil },
		Limits:   quota.StaticLimits{Plan: "pro", Included: 10},
		Store:    quota.NewMemoryStore(quota.MemoryOptions{}),
		Observer: tm.Quota(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, span := tm.tp.Tracer("test").Start(context.Background(), "GET /v1/things")
	mw.Handle(http.NotFoundHandler()).ServeHTTP(httptest.NewRecorder(),
		httptest.NewRequest("GET", "/v1/things", nil).WithContext(ctx))
	span.End()

	ended := tm.spans.Ended()
	if len(ended) != 1 || len(ended[0].Events()) != 1 {
		t.Fatalf("spans %v, want one with one event", ended)
	}
	e := ended[0].Events()[0]
	got := spanAttrs(e.Attributes)
	want := map[string]string{"billkit.outcome": "allowed", "billkit.plan": "pro", "billkit.meter": "requests"}
	if e.Name != "billkit.quota.decision" || !maps.Equal(got, want) {
		t.Errorf("event %s %v, want billkit.quota.decision %v", e.Name, got, want)
	}
	tm.assertNowhere(t, true, subject)
}

// TestQuotaResolve checks that the resolutions a quota.RedisStore reports
// through RedisOptions.Background, given the observer's Background, count
// as operation "resolve".
func TestQuotaResolve(t *testing.T) {
	t.Parallel()
	tm := newTelemetry(t)
	bg := tm.Quota().Background
	bg(context.Background(), quota.BackgroundObservation{Op: "resolve", Duration: time.Millisecond})
	bg(context.Background(), quota.BackgroundObservation{Op: "resolve", Duration: time.Millisecond, Err: errors.New("redis: connection refused")})
	want := map[string]int64{
		"billkit.operation=resolve,billkit.outcome=ok":     1,
		"billkit.operation=resolve,billkit.outcome=failed": 1,
	}
	checkSums(t, tm, "billkit.quota.background.calls", want)
	checkCounts(t, tm, "billkit.quota.background.duration", map[string]uint64{
		"billkit.operation=resolve,billkit.outcome=ok":     1,
		"billkit.operation=resolve,billkit.outcome=failed": 1,
	})
}
