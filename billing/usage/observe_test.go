package usage

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/billing/internal/fakestripe"
)

// reportObservations records what an Observer sees.
type reportObservations struct {
	mu     sync.Mutex
	report []ReportObservation
	passes []Stats
}

func (o *reportObservations) observer() Observer {
	return Observer{
		Report: func(_ context.Context, r ReportObservation) {
			o.mu.Lock()
			o.report = append(o.report, r)
			o.mu.Unlock()
		},
		Pass: func(_ context.Context, s Stats) {
			o.mu.Lock()
			o.passes = append(o.passes, s)
			o.mu.Unlock()
		},
	}
}

// TestObserverReports checks, for both sinks, the observation of every
// call to Stripe: two answered 429, then one acknowledged carrying the
// new units; a failed call; and each pass's stats.
func TestObserverReports(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			env := newReportEnv(t, "alice")
			var mu sync.Mutex
			calls := 0
			env.fake.SetFault(func(fakestripe.Request) fakestripe.Fault {
				mu.Lock()
				defer mu.Unlock()
				calls++
				switch calls {
				case 1, 2:
					return fakestripe.RateLimited
				case 4:
					return fakestripe.FailBefore
				}
				return fakestripe.None
			})
			var obs reportObservations
			r := env.reporter(t, mode, func(c *Config) {
				c.RateLimitPause = time.Millisecond
				c.Observer = obs.observer()
				c.BackoffMin = time.Nanosecond
				c.BackoffMax = time.Nanosecond
			})
			take(t, env.counters, "alice", env.period, 5)
			if err := r.ReportAll(context.Background()); err != nil {
				t.Fatal(err)
			}
			take(t, env.counters, "alice", env.period, 2)
			if err := r.Flush(context.Background(), "alice"); err == nil {
				t.Fatal("Flush succeeded through a failing call")
			}
			obs.mu.Lock()
			defer obs.mu.Unlock()
			want := []ReportOutcome{RateLimited, RateLimited, Reported, ReportFailed}
			if len(obs.report) != len(want) {
				t.Fatalf("%d report observations, want %d: %+v", len(obs.report), len(want), obs.report)
			}
			for i, o := range obs.report {
				if o.Outcome != want[i] || o.Plan != "pro" || o.Meter != "requests" || o.Sink != mode.sink() || o.Duration <= 0 {
					t.Errorf("observation %d = %+v, want %v of pro/requests to %s", i, o, want[i], mode.sink())
				}
				if (o.Err == nil) != (o.Outcome == Reported) {
					t.Errorf("observation %d: Err = %v", i, o.Err)
				}
			}
			if obs.report[2].Units != 5 || obs.report[3].Units != 2 {
				t.Errorf("units %d and %d, want 5 then 2", obs.report[2].Units, obs.report[3].Units)
			}
			if len(obs.passes) != 1 || obs.passes[0].Reported != 1 || obs.passes[0].RateLimited != 2 || obs.passes[0].Passes != 1 {
				t.Errorf("passes observed %+v, want one with the report and two 429s", obs.passes)
			}
		})
	}
}

func TestReportOutcomeString(t *testing.T) {
	t.Parallel()
	for o, s := range map[ReportOutcome]string{Reported: "reported", RateLimited: "rate_limited", ReportFailed: "failed", 0: "unknown", 9: "unknown"} {
		if o.String() != s {
			t.Errorf("%d: %q, want %q", o, o.String(), s)
		}
	}
}

// failingList is an entitlement source whose listing fails.
type failingList struct{ *reportEnts }

func (failingList) ForEach(context.Context, func(billing.Entitlement) error) error {
	return errors.New("store down")
}

// TestObserverNoPassWhenListingFails checks that a pass that could not
// list the entitlements is not observed as a pass: its partial counts
// would otherwise lower the pending and unbillable gauges.
func TestObserverNoPassWhenListingFails(t *testing.T) {
	t.Parallel()
	env := newReportEnv(t, "alice")
	var obs reportObservations
	r := env.reporter(t, reportDeltas, func(c *Config) {
		c.Observer = obs.observer()
		c.Entitlements = failingList{env.ents}
	})
	if err := r.ReportAll(context.Background()); err == nil {
		t.Fatal("ReportAll succeeded without a listing")
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.passes) != 0 {
		t.Errorf("passes observed %+v, want none", obs.passes)
	}
}

// TestObserverAlreadyReported checks, for both sinks, that a report whose
// acknowledgement was lost is observed as failed, and its resend, which
// Stripe answers as a duplicate or an idempotent replay, as
// already_reported: its units are observed as reported once.
func TestObserverAlreadyReported(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			env := newReportEnv(t, "alice")
			var mu sync.Mutex
			calls := 0
			env.fake.SetFault(func(fakestripe.Request) fakestripe.Fault {
				mu.Lock()
				defer mu.Unlock()
				calls++
				if calls == 1 {
					return fakestripe.LoseResponse
				}
				return fakestripe.None
			})
			var obs reportObservations
			r := env.reporter(t, mode, func(c *Config) {
				c.Observer = obs.observer()
				c.BackoffMin, c.BackoffMax = time.Nanosecond, time.Nanosecond
			})
			take(t, env.counters, "alice", env.period, 5)
			if err := r.Flush(context.Background(), "alice"); err == nil {
				t.Fatal("Flush succeeded through a lost response")
			}
			if err := r.Flush(context.Background(), "alice"); err != nil {
				t.Fatal(err)
			}
			e, _ := env.ents.Get(context.Background(), "alice")
			if got := held(env.fake, mode, e); got != 5 {
				t.Fatalf("Stripe holds %d, want 5", got)
			}
			obs.mu.Lock()
			defer obs.mu.Unlock()
			var got []ReportOutcome
			for _, o := range obs.report {
				got = append(got, o.Outcome)
			}
			if len(got) != 2 || got[0] != ReportFailed || got[1] != AlreadyReported || obs.report[1].Units != 5 {
				t.Errorf("observations %+v, want failed then already_reported of 5 units", obs.report)
			}
		})
	}
}
