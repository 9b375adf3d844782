package usage

import (
	"bytes"
	"context"
	"github.com/billkit/billkit/billing"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/billkit/billkit/billing/internal/fakestripe"
	"github.com/billkit/billkit/internal/testserver"
	"github.com/billkit/billkit/quota"
	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
)

// mixedPlans is a catalog of one plan billed through a Billing Meter and
// one billed through a legacy metered price.
func mixedPlans(t testing.TB) *billing.Plans {
	return mustPlans(t,
		billing.Plan{Tier: "pro", PriceID: "price_pro", Included: 100, Overage: true, MeterEventName: "api_requests"},
		billing.Plan{Tier: "legacy", PriceID: "price_legacy", Included: 100, Overage: true, MeteredPriceID: "price_legacy_metered"},
	)
}

// TestMixedCatalogRoutesEachPlan (B5): one Reporter reports a meter-event
// plan's subject as meter events and a usage-record plan's subject as usage
// records, each to its own sink, against the fake Stripe and against the
// two stripe-mocks (v0.203.0 has meter events, v0.162.0 usage records).
func TestMixedCatalogRoutesEachPlan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := newTestClock(time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC))
	p := quota.Period{Start: time.Date(2026, 11, 3, 7, 0, 0, 0, time.UTC), End: time.Date(2026, 12, 3, 7, 0, 0, 0, time.UTC)}
	newEnts := func() *reportEnts {
		return newReportEnts(
			billing.Entitlement{Subject: "alice", Tier: "pro", Status: billing.StatusActive, CustomerID: "cus_alice", Period: p},
			billing.Entitlement{Subject: "bob", Tier: "legacy", Status: billing.StatusActive, CustomerID: "cus_bob", MeteredItemID: "si_bob", Period: p},
		)
	}

	t.Run("fake", func(t *testing.T) {
		t.Parallel()
		fake := fakestripe.NewServer()
		t.Cleanup(fake.Close)
		counters := quota.NewMemoryStore(quota.MemoryOptions{Now: clock.Now})
		take(t, counters, "alice", p, 42)
		take(t, counters, "bob", p, 17)
		r, err := NewReporter(Config{
			Entitlements: newEnts(), Counters: counters, Stripe: stripeAPI(fake.URL, 0),
			Plans: mixedPlans(t), Logger: quietLogger(), Now: clock.Now, Rate: 1e6, Burst: 100,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.ReportAll(ctx); err != nil {
			t.Fatal(err)
		}
		if st := r.Stats(); st.Reported != 2 || st.Failed != 0 || st.Unbillable != 0 {
			t.Fatalf("stats = %+v, want both subjects reported", st)
		}
		if got := fake.MeterTotal("cus_alice", "api_requests"); got != 42 {
			t.Errorf("alice's meter events total %d, want 42", got)
		}
		if got := fake.UsageTotal("si_bob"); got != 17 {
			t.Errorf("bob's usage records total %d, want 17", got)
		}
		if n := fake.Calls("usage_records"); n != 1 {
			t.Errorf("%d usage record calls, want 1 (bob's)", n)
		}
		if n := fake.Calls("meter_events"); n != 1 {
			t.Errorf("%d meter event calls, want 1 (alice's)", n)
		}
	})

	t.Run("stripe-mock", func(t *testing.T) {
		t.Parallel()
		meters := testserver.StartStripeMock(t, testserver.StripeMockMeterEvents)
		records := testserver.StartStripeMock(t, testserver.StripeMockUsageRecords)
		counters := quota.NewMemoryStore(quota.MemoryOptions{Now: clock.Now})
		take(t, counters, "alice", p, 42)
		take(t, counters, "bob", p, 17)
		// One Stripe client, as in production; its transport sends meter
		// events to v0.203.0 and usage records to v0.162.0.
		api := client.New("sk_test_billkit", &stripe.Backends{API: stripe.GetBackendWithConfig(stripe.APIBackend,
			&stripe.BackendConfig{
				URL:               stripe.String(meters.URL),
				HTTPClient:        &http.Client{Transport: byPath{meters: meters.URL, records: records.URL}},
				MaxNetworkRetries: stripe.Int64(0),
				LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull},
			})})
		r, err := NewReporter(Config{
			Entitlements: newEnts(), Counters: counters, Stripe: api,
			Plans: mixedPlans(t), Logger: quietLogger(), Now: clock.Now,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.ReportAll(ctx); err != nil {
			t.Fatal(err)
		}
		if st := r.Stats(); st.Reported != 2 || st.Failed != 0 || st.Reports != 2 {
			t.Fatalf("stats = %+v, want both subjects reported, one call each", st)
		}
	})
}

// byPath sends the Billing API's requests to meters and all others to
// records.
type byPath struct{ meters, records string }

func (b byPath) RoundTrip(r *http.Request) (*http.Response, error) {
	base := b.records
	if strings.HasPrefix(r.URL.Path, "/v1/billing/") {
		base = b.meters
	}
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	r = r.Clone(r.Context())
	r.URL.Scheme, r.URL.Host, r.Host = u.Scheme, u.Host, u.Host
	return http.DefaultTransport.RoundTrip(r)
}

// TestRateLimitSlowsDown (B5): when Stripe answers 429 the reporter pauses
// every call, doubling the pause while 429s go on, halves its rate, sends
// the same report again (deduplicated by its identifier) and counts the
// 429s; the report lands in the same pass.
func TestRateLimitSlowsDown(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			env := newReportEnv(t, "alice")
			var mu sync.Mutex
			var at []time.Time
			env.fake.SetFault(func(fakestripe.Request) fakestripe.Fault {
				mu.Lock()
				defer mu.Unlock()
				at = append(at, time.Now())
				if len(at) <= 2 {
					return fakestripe.RateLimited
				}
				return fakestripe.None
			})
			const pause = 40 * time.Millisecond
			r := env.reporter(t, mode, func(c *Config) { c.RateLimitPause = pause })
			take(t, env.counters, "alice", env.period, 5)
			if err := r.ReportAll(context.Background()); err != nil {
				t.Fatal(err)
			}
			st := r.Stats()
			if st.Reported != 1 || st.Failed != 0 || st.RateLimited != 2 || st.Reports != 1 {
				t.Fatalf("stats = %+v, want the report landed after 2 rate-limited calls", st)
			}
			e, _ := env.ents.Get(context.Background(), "alice")
			if got := held(env.fake, mode, e); got != 5 {
				t.Fatalf("Stripe holds %d, want 5", got)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(at) != 3 {
				t.Fatalf("%d calls, want 3", len(at))
			}
			// Lower bounds only: the pauses happened (the rate alone,
			// 1e6/s, would allow the calls microseconds apart).
			if d := at[1].Sub(at[0]); d < pause {
				t.Errorf("second call %v after the first 429, want at least %v", d, pause)
			}
			if d := at[2].Sub(at[1]); d < 2*pause {
				t.Errorf("third call %v after the second 429, want at least %v (doubled)", d, 2*pause)
			}
			if got := r.bucket.currentRate(); got >= 1e6 {
				t.Errorf("rate after two 429s and one success = %v, want below the configured 1e6", got)
			}
		})
	}

	t.Run("gives up after three", func(t *testing.T) {
		t.Parallel()
		env := newReportEnv(t, "alice")
		env.fake.SetFault(func(fakestripe.Request) fakestripe.Fault { return fakestripe.RateLimited })
		r := env.reporter(t, reportDeltas, func(c *Config) { c.RateLimitPause = time.Millisecond })
		take(t, env.counters, "alice", env.period, 5)
		if err := r.ReportAll(context.Background()); err != nil {
			t.Fatal(err)
		}
		if st := r.Stats(); st.Failed != 1 || st.RateLimited != maxRateLimited || st.Pending != 1 {
			t.Fatalf("stats = %+v, want one failed subject after %d rate-limited calls", st, maxRateLimited)
		}
	})
}

// TestUnbillableCountedAndLogged (V2): a live subject whose counted usage
// the reporter cannot bill is counted in Stats().Unbillable and logged at
// ERROR on every pass; one without counted usage is not.
func TestUnbillableCountedAndLogged(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := newTestClock(time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC))
	p := quota.Period{Start: time.Date(2026, 11, 3, 7, 0, 0, 0, time.UTC), End: time.Date(2026, 12, 3, 7, 0, 0, 0, time.UTC)}
	calendar := quota.CalendarPeriod(quota.Month, clock.Now())
	cases := []struct {
		name   string
		e      billing.Entitlement
		period quota.Period // where its units are counted
		reason string
	}{
		{"no period", billing.Entitlement{Tier: "pro", Status: billing.StatusActive, CustomerID: "cus_x"}, calendar, "no billing period"},
		{"unknown tier", billing.Entitlement{Tier: "gold", Status: billing.StatusActive, CustomerID: "cus_x", Period: p}, p, "not in the plan catalog"},
		{"no metered item", billing.Entitlement{Tier: "legacy", Status: billing.StatusActive, CustomerID: "cus_x", Period: p}, p, "no item of the meter's metered price"},
		{"no customer", billing.Entitlement{Tier: "pro", Status: billing.StatusTrialing, Period: p}, p, "no Stripe customer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fake := fakestripe.NewServer()
			t.Cleanup(fake.Close)
			counters := quota.NewMemoryStore(quota.MemoryOptions{Now: clock.Now})
			tc.e.Subject = "x"
			idle := billing.Entitlement{Subject: "y", Tier: tc.e.Tier, Status: tc.e.Status, CustomerID: tc.e.CustomerID,
				MeteredItemID: tc.e.MeteredItemID, Period: tc.e.Period} // the same, without usage
			take(t, counters, "x", tc.period, 3)
			var logs bytes.Buffer
			var mu sync.Mutex
			cfg := Config{
				Entitlements: newReportEnts(tc.e, idle), Counters: counters,
				Stripe: stripeAPI(fake.URL, 0), Plans: mixedPlans(t), Now: clock.Now, Rate: 1e6, Burst: 100,
				Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, &slog.HandlerOptions{Level: slog.LevelError})),
			}
			r, err := NewReporter(cfg)
			if err != nil {
				t.Fatal(err)
			}
			for pass := 1; pass <= 2; pass++ {
				if err := r.ReportAll(ctx); err != nil {
					t.Fatal(err)
				}
				if st := r.Stats(); st.Unbillable != 1 || st.Reported != 0 {
					t.Fatalf("pass %d: stats = %+v, want exactly one unbillable subject", pass, st)
				}
			}
			mu.Lock()
			out := logs.String()
			mu.Unlock()
			if n := strings.Count(out, "counted usage cannot be billed"); n != 2 {
				t.Fatalf("%d ERROR records in two passes, want 2:\n%s", n, out)
			}
			if !strings.Contains(out, tc.reason) || !strings.Contains(out, "subject=x") || strings.Contains(out, "subject=y") {
				t.Fatalf("log does not name x and %q alone:\n%s", tc.reason, out)
			}
			if n := fake.Calls(""); n != 0 {
				t.Fatalf("%d Stripe calls for unbillable usage", n)
			}
		})
	}
}

// lockedWriter serializes writes to w.
type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
