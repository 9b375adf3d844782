package usage

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/billkit/billkit/billing"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/billkit/billkit/billing/internal/fakestripe"
	"github.com/billkit/billkit/quota"
	"github.com/billkit/billkit/webhook"
	"github.com/billkit/billkit/webhook/webhooktest"
	"github.com/stripe/stripe-go/v76"
)

// reportEnv is a reporter on memory stores and the fake Stripe.
type reportEnv struct {
	fake     *fakestripe.Server
	clock    *testClock
	counters *countingUsage
	ents     *reportEnts
	wms      *memoryWatermarks
	period   quota.Period
}

// countingUsage counts Usage reads per period ID.
type countingUsage struct {
	quota.Store
	mu    sync.Mutex
	reads map[string]int
}

func (c *countingUsage) Usage(ctx context.Context, subject, meter string, p quota.Period) (quota.Usage, error) {
	c.mu.Lock()
	c.reads[p.ID()]++
	c.mu.Unlock()
	return c.Store.Usage(ctx, subject, meter, p)
}

func (c *countingUsage) readsOf(p quota.Period) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads[p.ID()]
}

func newReportEnv(t *testing.T, subjects ...string) *reportEnv {
	t.Helper()
	fake := fakestripe.NewServer()
	t.Cleanup(fake.Close)
	clock := newTestClock(time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC))
	p := quota.CalendarPeriod(quota.Month, clock.Now())
	var es []billing.Entitlement
	for _, s := range subjects {
		es = append(es, billing.Entitlement{Subject: s, Tier: "pro", Status: billing.StatusActive,
			CustomerID: "cus_" + s, MeteredItemID: "si_" + s, Period: p})
	}
	return &reportEnv{
		fake: fake, clock: clock, period: p, ents: newReportEnts(es...),
		counters: &countingUsage{Store: quota.NewMemoryStore(quota.MemoryOptions{Now: clock.Now}), reads: map[string]int{}},
		wms:      newMemoryWatermarks(clock.Now),
	}
}

func (env *reportEnv) reporter(t *testing.T, mode reportMode, mod func(*Config)) *Reporter {
	t.Helper()
	cfg := withSink(Config{
		Entitlements: env.ents, Counters: env.counters,
		watermarks: env.wms, leases: newMemoryLeases(env.clock.Now),
		meter: testMeterFunc, Logger: quietLogger(), Now: env.clock.Now, Rate: 1e6, Burst: 100,
	}, newSink(t, mode, env.fake.URL))
	if mod != nil {
		mod(&cfg)
	}
	r, err := NewReporter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestNewReporterValidates(t *testing.T) {
	t.Parallel()
	env := newReportEnv(t)
	valid := func() Config {
		return Config{Entitlements: env.ents, Counters: env.counters, Stripe: stripeAPI(env.fake.URL, 0),
			Plans: mustPlans(t, billing.Plan{Tier: "pro", PriceID: "price_pro", Included: 1, Overage: true, MeterEventName: "api_requests"})}
	}
	cases := map[string]func(*Config){
		"no entitlements": func(c *Config) { c.Entitlements = nil },
		"no counters":     func(c *Config) { c.Counters = nil },
		"no stripe":       func(c *Config) { c.Stripe = nil },
		"no plans":        func(c *Config) { c.Plans = nil },
		// Q2: a report after the quota store dropped the counter would
		// read zero and lose the period's late usage.
		"lateness beyond counter retention": func(c *Config) { c.MaxLateness, c.Retention = 40*24*time.Hour, 50*24*time.Hour },
		"lateness plus settle reach it": func(c *Config) {
			c.CounterRetention, c.MaxLateness, c.Settle = 10*24*time.Hour, 10*24*time.Hour-time.Minute, time.Minute
		},
		"call timeout":      func(c *Config) { c.CallTimeout = 2 * time.Minute },
		"retention":         func(c *Config) { c.Retention = 30 * 24 * time.Hour },
		"negative interval": func(c *Config) { c.Interval = -time.Second },
		"negative rate":     func(c *Config) { c.Rate = -1 },
		"backoff order":     func(c *Config) { c.BackoffMin, c.BackoffMax = time.Hour, time.Minute },
		"long prefix":       func(c *Config) { c.IdentifierPrefix = strings.Repeat("x", 51) },
	}
	for name, mod := range cases {
		t.Run(name, func(t *testing.T) {
			c := valid()
			mod(&c)
			if _, err := NewReporter(c); !errors.Is(err, billing.ErrInvalidConfig) {
				t.Fatalf("NewReporter = %v; want billing.ErrInvalidConfig", err)
			}
		})
	}
	r, err := NewReporter(valid())
	if err != nil {
		t.Fatal(err)
	}
	if r.cfg.Interval != time.Hour || r.cfg.Rate != 20 || r.cfg.LeaseTTL != 2*time.Minute || r.cfg.Retention != 45*24*time.Hour ||
		r.cfg.MaxLateness != quota.DefaultRetention-24*time.Hour || r.cfg.Logger != slog.Default() {
		t.Fatalf("defaults not applied: %+v", r.cfg)
	}
	// Q2: with both packages' defaults, a period's counter outlives the
	// last time the reporter reads it.
	if last := r.cfg.MaxLateness + r.cfg.Settle; last >= quota.DefaultRetention {
		t.Fatalf("reporter reads a period until %v after its end; quota keeps its counter %v", last, quota.DefaultRetention)
	}
}

func TestIsDuplicateMeterEvent(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"stripe's answer", &stripe.Error{HTTPStatusCode: 400, Type: stripe.ErrorTypeInvalidRequest,
			Msg: "An event already exists with identifier billkit_abc."}, true},
		{"wrapped", errors.Join(errors.New("x"), &stripe.Error{HTTPStatusCode: 400, Type: stripe.ErrorTypeInvalidRequest,
			Code: stripe.ErrorCodeResourceAlreadyExists}), true},
		{"other 400", &stripe.Error{HTTPStatusCode: 400, Type: stripe.ErrorTypeInvalidRequest, Msg: "No such customer"}, false},
		{"server error with the message", &stripe.Error{HTTPStatusCode: 500, Type: stripe.ErrorTypeAPI,
			Msg: "An event already exists with identifier x"}, false},
		{"not a stripe error", errors.New("An event already exists with identifier x"), false},
		{"nil", nil, false},
	}
	for _, c := range cases {
		if got := isDuplicateMeterEvent(c.err); got != c.want {
			t.Errorf("%s: isDuplicateMeterEvent = %v; want %v", c.name, got, c.want)
		}
	}
}

func TestReportIdentifier(t *testing.T) {
	t.Parallel()
	p := quota.CalendarPeriod(quota.Month, time.Date(2026, 11, 5, 0, 0, 0, 0, time.UTC))
	a := reportIdentifier("billkit", reportDeltas, "alice", "requests", p, "", 0, 10)
	if a != reportIdentifier("billkit", reportDeltas, "alice", "requests", p, "", 0, 10) {
		t.Fatal("identifier is not deterministic")
	}
	if len(a) > 100 || !strings.HasPrefix(a, "billkit_") {
		t.Fatalf("identifier %q: want billkit_ prefix, at most 100 bytes", a)
	}
	seen := map[string]bool{a: true}
	for _, other := range []string{
		reportIdentifier("billkit", reportDeltas, "alice", "requests", p, "", 0, 11),
		reportIdentifier("billkit", reportDeltas, "alice", "requests", p, "", 10, 20),
		reportIdentifier("billkit", reportDeltas, "alicf", "requests", p, "", 0, 10),
		reportIdentifier("billkit", reportDeltas, "alice", "tokens", p, "", 0, 10),
		reportIdentifier("billkit", reportDeltas, "alice", "requests", quota.Period{Start: p.End, End: p.End.AddDate(0, 1, 0)}, "", 0, 10),
		reportIdentifier("other", reportDeltas, "alice", "requests", p, "", 0, 10),
		reportIdentifier("billkit", reportTotals, "alice", "requests", p, "", 0, 10),
	} {
		if seen[other] {
			t.Fatalf("identifier collision: %q", other)
		}
		seen[other] = true
	}
}

func TestEventTime(t *testing.T) {
	t.Parallel()
	p := quota.CalendarPeriod(quota.Month, time.Date(2026, 11, 5, 0, 0, 0, 0, time.UTC))
	cases := []struct{ now, want time.Time }{
		{p.Start.Add(90*time.Minute + 500*time.Millisecond), p.Start.Add(90 * time.Minute)},
		{p.End.Add(time.Hour), p.End.Add(-time.Second)},
		{p.Start.Add(-time.Hour), p.Start},
	}
	for _, c := range cases {
		if got := eventTime(p, c.now); !got.Equal(c.want) {
			t.Errorf("eventTime(%v) = %v; want %v", c.now, got, c.want)
		}
	}
}

func TestTokenBucket(t *testing.T) {
	t.Parallel()
	clock := newTestClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	b := newTokenBucket(10, 2, clock.Now) // 10/s, burst 2
	want := []time.Duration{0, 0, 100 * time.Millisecond, 200 * time.Millisecond}
	for i, w := range want {
		if got := b.reserve(); got != w {
			t.Fatalf("reserve %d = %v; want %v", i, got, w)
		}
	}
	clock.Add(time.Second) // refills, capped at the burst
	for i, w := range []time.Duration{0, 0, 100 * time.Millisecond} {
		if got := b.reserve(); got != w {
			t.Fatalf("after refill, reserve %d = %v; want %v", i, got, w)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.wait(ctx); err == nil {
		t.Fatal("wait on a cancelled context with an empty bucket succeeded")
	}
}

// TestIdleSubjectsCostNoStripeCall checks that a pass makes one Stripe
// call per subject with new usage and none for the others, and takes no
// lease for an idle subject.
func TestIdleSubjectsCostNoStripeCall(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			env := newReportEnv(t, "a", "b", "c")
			var acquires atomic.Int32
			leases := &countingLeases{leaseStore: newMemoryLeases(env.clock.Now), n: &acquires}
			r := env.reporter(t, mode, func(c *Config) { c.leases = leases })
			ctx := context.Background()
			take(t, env.counters, "a", env.period, 5)
			if err := r.ReportAll(ctx); err != nil {
				t.Fatal(err)
			}
			if got := env.fake.Calls(""); got != 1 {
				t.Fatalf("Stripe calls = %d; want 1 (only a has usage)", got)
			}
			if err := r.ReportAll(ctx); err != nil {
				t.Fatal(err)
			}
			if got := env.fake.Calls(""); got != 1 {
				t.Fatalf("Stripe calls after an idle pass = %d; want still 1", got)
			}
			if got := acquires.Load(); got != 1 {
				t.Fatalf("leases taken = %d; want 1", got)
			}
			st := r.Stats()
			if st.Subjects != 3 || st.Reported != 0 || st.Passes != 2 || st.Reports != 1 {
				t.Fatalf("stats = %+v", st)
			}
		})
	}
}

type countingLeases struct {
	leaseStore
	n *atomic.Int32
}

func (c *countingLeases) Acquire(ctx context.Context, s string, ttl time.Duration) (string, bool, error) {
	c.n.Add(1)
	return c.leaseStore.Acquire(ctx, s, ttl)
}

// TestClosedPeriodReportedThenFinal checks that a renewed subject's
// previous period is reported once more, then marked final once settled,
// after which its counter is not read again (and the watermark expires
// after the retention).
func TestClosedPeriodReportedThenFinal(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			env := newReportEnv(t, "a")
			r := env.reporter(t, mode, nil)
			ctx := context.Background()
			p1 := env.period
			p2 := quota.Period{Start: p1.End, End: p1.End.AddDate(0, 1, 0)}
			take(t, env.counters, "a", p1, 10)
			if err := r.ReportAll(ctx); err != nil {
				t.Fatal(err)
			}
			env.clock.Set(p1.End.Add(-time.Millisecond))
			take(t, env.counters, "a", p1, 3) // the last units of p1
			env.clock.Set(p1.End.Add(30 * time.Second))
			env.ents.renew("a", p2)
			take(t, env.counters, "a", p2, 4)
			if err := r.ReportAll(ctx); err != nil {
				t.Fatal(err)
			}
			e, _ := env.ents.Get(ctx, "a")
			if got := held(env.fake, mode, e); got != 17 {
				t.Fatalf("Stripe holds %d; want 17", got)
			}
			env.clock.Set(p1.End.Add(10 * time.Minute)) // settled
			for i := 0; i < 2; i++ {
				if err := r.ReportAll(ctx); err != nil {
					t.Fatal(err)
				}
			}
			reads := env.counters.readsOf(p1)
			wm, _ := env.wms.Load(ctx, "a", testMeter, []quota.Period{p1})
			if !wm[0].Final || wm[0].Reported != 13 {
				t.Fatalf("p1 watermark = %+v; want final at 13", wm[0])
			}
			for i := 0; i < 3; i++ {
				if err := r.ReportAll(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if got := env.counters.readsOf(p1); got != reads {
				t.Fatalf("final period's counter read %d more times", got-reads)
			}
			// The watermark expires after the retention.
			env.clock.Set(p1.End.Add(45*24*time.Hour + time.Second))
			wm, _ = env.wms.Load(ctx, "a", testMeter, []quota.Period{p1})
			if wm[0] != (watermark{}) {
				t.Fatalf("p1 watermark after retention = %+v; want expired", wm[0])
			}
			if got := held(env.fake, mode, e); got != 17 {
				t.Fatalf("Stripe holds %d; want 17", got)
			}
		})
	}
}

// TestPeriodsReported checks which periods of an entitlement are looked
// at: not a future one, not one older than MaxLateness.
func TestPeriodsReported(t *testing.T) {
	t.Parallel()
	env := newReportEnv(t)
	r := env.reporter(t, reportDeltas, nil)
	now := env.clock.Now()
	cur := env.period
	prev := quota.Period{Start: cur.Start.AddDate(0, -1, 0), End: cur.Start}
	old := quota.Period{Start: cur.Start.AddDate(0, -3, 0), End: cur.Start.AddDate(0, -2, 0)}
	future := quota.Period{Start: cur.End, End: cur.End.AddDate(0, 1, 0)}
	cases := []struct {
		name string
		e    billing.Entitlement
		want []quota.Period
	}{
		{"current and previous", billing.Entitlement{Period: cur, PreviousPeriod: prev}, []quota.Period{prev, cur}},
		{"no previous", billing.Entitlement{Period: cur}, []quota.Period{cur}},
		{"previous too old", billing.Entitlement{Period: cur, PreviousPeriod: old}, []quota.Period{cur}},
		{"future period", billing.Entitlement{Period: future, PreviousPeriod: cur}, []quota.Period{cur}},
		{"same twice", billing.Entitlement{Period: cur, PreviousPeriod: cur}, []quota.Period{cur}},
		{"none", billing.Entitlement{}, nil},
	}
	for _, c := range cases {
		got := r.periods(c.e, now)
		if len(got) != len(c.want) {
			t.Errorf("%s: periods = %v; want %v", c.name, got, c.want)
			continue
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("%s: periods = %v; want %v", c.name, got, c.want)
			}
		}
	}
}

// failingSink fails every report of one subject.
type failingSink struct {
	sink
	subject string
	calls   atomic.Int32
}

func (f *failingSink) Report(ctx context.Context, r usageReport) error {
	if r.Subject == f.subject {
		f.calls.Add(1)
		return errors.New("stripe is unhappy with this one")
	}
	return f.sink.Report(ctx, r)
}

// TestFailingSubjectDoesNotStallOthers checks per-subject isolation and
// backoff: a subject whose reports fail is retried only after its backoff,
// the others are reported meanwhile, and Flush ignores the backoff.
func TestFailingSubjectDoesNotStallOthers(t *testing.T) {
	t.Parallel()
	env := newReportEnv(t, "a", "bad", "c")
	sink := &failingSink{sink: newSink(t, reportDeltas, env.fake.URL), subject: "bad"}
	r := env.reporter(t, reportDeltas, func(c *Config) {
		c.sinks[reportDeltas-1] = sink
		c.BackoffMin, c.BackoffMax = time.Minute, 4*time.Minute
	})
	ctx := context.Background()
	for _, s := range []string{"a", "bad", "c"} {
		take(t, env.counters, s, env.period, 2)
	}
	if err := r.ReportAll(ctx); err != nil {
		t.Fatal(err)
	}
	if st := r.Stats(); st.Reported != 2 || st.Failed != 1 || st.Pending != 1 {
		t.Fatalf("stats = %+v; want 2 reported, 1 failed", st)
	}
	for _, s := range []string{"a", "c"} {
		if got := env.fake.MeterTotal("cus_"+s, "api_requests"); got != 2 {
			t.Fatalf("%s: Stripe holds %d; want 2", s, got)
		}
	}
	// Within the backoff: skipped, still pending.
	env.clock.Add(30 * time.Second)
	if err := r.ReportAll(ctx); err != nil {
		t.Fatal(err)
	}
	if got := sink.calls.Load(); got != 1 {
		t.Fatalf("failing subject tried %d times within its backoff; want 1", got)
	}
	if st := r.Stats(); st.Pending != 1 || st.Failed != 0 {
		t.Fatalf("stats in backoff = %+v", st)
	}
	// After it: tried again; the backoff doubles.
	env.clock.Add(31 * time.Second)
	_ = r.ReportAll(ctx)
	env.clock.Add(61 * time.Second)
	_ = r.ReportAll(ctx)
	if got := sink.calls.Load(); got != 2 {
		t.Fatalf("failing subject tried %d times; want 2 (second backoff is 2m)", got)
	}
	// Flush ignores the backoff.
	if err := r.Flush(ctx, "bad"); err == nil {
		t.Fatal("Flush of the failing subject succeeded")
	}
	if got := sink.calls.Load(); got != 3 {
		t.Fatalf("Flush did not try: %d calls", got)
	}
	if err := r.Flush(ctx, "nobody"); !errors.Is(err, billing.ErrNotFound) {
		t.Fatalf("Flush of an unknown subject = %v; want billing.ErrNotFound", err)
	}
}

// TestFlushWaitsForLease checks that Flush reports ErrLeaseBusy when
// another reporter keeps the subject's lease.
func TestFlushWaitsForLease(t *testing.T) {
	t.Parallel()
	env := newReportEnv(t, "a")
	leases := newMemoryLeases(env.clock.Now)
	r := env.reporter(t, reportTotals, func(c *Config) { c.leases = leases; c.FlushWait = 20 * time.Millisecond })
	take(t, env.counters, "a", env.period, 1)
	if _, ok, _ := leases.Acquire(context.Background(), "a", time.Hour); !ok {
		t.Fatal("acquire")
	}
	if err := r.Flush(context.Background(), "a"); !errors.Is(err, ErrLeaseBusy) {
		t.Fatalf("Flush = %v; want ErrLeaseBusy", err)
	}
	if env.fake.Calls("") != 0 {
		t.Fatal("reported without the lease")
	}
}

// TestInvoiceCreatedFlushes delivers a signed invoice.created through a
// webhook.Handler: the customer's usage reaches Stripe before the handler
// answers; an unknown customer's invoice is acknowledged.
func TestInvoiceCreatedFlushes(t *testing.T) {
	t.Parallel()
	env := newReportEnv(t, "alice")
	r := env.reporter(t, reportTotals, func(c *Config) { c.BackoffMin = time.Hour; c.BackoffMax = time.Hour })
	take(t, env.counters, "alice", env.period, 7)
	const secret = "whsec_test"
	h, err := webhook.New(webhook.Config{Secrets: []string{secret}, Store: webhook.NewMemoryStore(webhook.MemoryOptions{}), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	r.Register(h)
	statuses := webhooktest.Deliver(t, h, secret,
		webhooktest.NewEvent(stripe.EventTypeInvoiceCreated, map[string]any{"id": "in_1", "object": "invoice", "customer": "cus_alice"}),
		webhooktest.NewEvent(stripe.EventTypeInvoiceCreated, map[string]any{"id": "in_2", "object": "invoice", "customer": "cus_stranger"}),
	)
	for i, s := range statuses {
		if s != http.StatusOK {
			t.Fatalf("delivery %d: status %d; want 200", i, s)
		}
	}
	if got := env.fake.UsageTotal("si_alice"); got != 7 {
		t.Fatalf("Stripe holds %d after invoice.created; want 7", got)
	}

	// A failed flush fails the delivery, so Stripe retries it.
	take(t, env.counters, "alice", env.period, 1)
	env.fake.SetFault(func(fakestripe.Request) fakestripe.Fault { return fakestripe.FailBefore })
	statuses = webhooktest.Deliver(t, h, secret,
		webhooktest.NewEvent(stripe.EventTypeInvoiceCreated, map[string]any{"id": "in_3", "object": "invoice", "customer": "cus_alice"}))
	if statuses[0] < 500 {
		t.Fatalf("status after a failed flush = %d; want 5xx", statuses[0])
	}
}

// TestInvoiceCreatedOtherShape: an invoice.created whose invoice has fields
// of another shape than stripe-go's (an endpoint pinned to another API
// version, W5) still flushes its customer's usage and is acknowledged,
// rather than failing every delivery until Stripe disables the endpoint
// (W3); an invoice without a readable customer is acknowledged too.
func TestInvoiceCreatedOtherShape(t *testing.T) {
	t.Parallel()
	env := newReportEnv(t, "alice")
	r := env.reporter(t, reportTotals, nil)
	take(t, env.counters, "alice", env.period, 5)
	ctx := context.Background()
	ev := webhooktest.NewEvent(stripe.EventTypeInvoiceCreated, map[string]any{
		"id": "in_1", "object": "invoice", "customer": map[string]any{"id": "cus_alice", "object": "customer"},
		"total": "1,000", "lines": "elsewhere", "subscription": map[string]any{"id": 7},
	})
	if err := r.handleInvoiceCreated(ctx, decodeEvent(t, ev)); err != nil {
		t.Fatalf("handleInvoiceCreated = %v; want nil", err)
	}
	if got := env.fake.UsageTotal("si_alice"); got != 5 {
		t.Fatalf("Stripe holds %d; want 5", got)
	}
	bad := webhooktest.NewEvent(stripe.EventTypeInvoiceCreated, map[string]any{"id": "in_2", "object": "invoice", "customer": 42})
	if err := r.handleInvoiceCreated(ctx, decodeEvent(t, bad)); err != nil {
		t.Fatalf("handleInvoiceCreated(unreadable customer) = %v; want nil", err)
	}
}

func decodeEvent(t *testing.T, payload []byte) *stripe.Event {
	t.Helper()
	var ev stripe.Event
	if err := json.Unmarshal(payload, &ev); err != nil {
		t.Fatal(err)
	}
	return &ev
}

// TestRunReportsUntilCancelled checks that Run passes immediately and
// returns nil when its context ends.
func TestRunReportsUntilCancelled(t *testing.T) {
	t.Parallel()
	env := newReportEnv(t, "a")
	r := env.reporter(t, reportDeltas, func(c *Config) { c.Interval = time.Millisecond })
	take(t, env.counters, "a", env.period, 3)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	for r.Stats().Passes < 3 {
		select {
		case err := <-done:
			t.Fatalf("Run returned early: %v", err)
		case <-time.After(time.Millisecond): // Run's own ticker paces the passes
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v; want nil", err)
	}
	if got := env.fake.MeterTotal("cus_a", "api_requests"); got != 3 {
		t.Fatalf("Stripe holds %d; want 3", got)
	}
}

// movingWatermarks runs once, after the first Load, a report by another
// reporter: the first reporter's read is then stale.
type movingWatermarks struct {
	watermarkStore
	once  sync.Once
	other func()
}

func (m *movingWatermarks) Load(ctx context.Context, subject, meter string, ps []quota.Period) ([]watermark, error) {
	w, err := m.watermarkStore.Load(ctx, subject, meter, ps)
	m.once.Do(m.other)
	return w, err
}

// TestWatermarkMovedBeforeLease checks that a reporter whose first read is
// overtaken by another reporter reads again under its lease and neither
// resends the other's range nor reports a failure.
func TestWatermarkMovedBeforeLease(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			env := newReportEnv(t, "a")
			other := env.reporter(t, mode, nil)
			moving := &movingWatermarks{watermarkStore: env.wms}
			moving.other = func() {
				if err := other.Flush(context.Background(), "a"); err != nil {
					t.Error(err)
				}
			}
			r := env.reporter(t, mode, func(c *Config) { c.watermarks = moving })
			take(t, env.counters, "a", env.period, 10)
			if err := r.ReportAll(context.Background()); err != nil {
				t.Fatal(err)
			}
			if st := r.Stats(); st.Failed != 0 || st.Pending != 0 {
				t.Fatalf("stats = %+v; want no failure", st)
			}
			e, _ := env.ents.Get(context.Background(), "a")
			if got := held(env.fake, mode, e); got != 10 {
				t.Fatalf("Stripe holds %d; want 10", got)
			}
		})
	}
}

// TestCallDeadline checks that a Stripe call that never answers is
// abandoned after CallTimeout and reported as a failure.
func TestCallDeadline(t *testing.T) {
	t.Parallel()
	env := newReportEnv(t, "a")
	r := env.reporter(t, reportDeltas, func(c *Config) {
		c.CallTimeout, c.LeaseTTL = 50*time.Millisecond, time.Second
	})
	take(t, env.counters, "a", env.period, 1)
	env.fake.SetFault(func(fakestripe.Request) fakestripe.Fault { return fakestripe.Hang })
	start := time.Now()
	err := r.Flush(context.Background(), "a")
	if err == nil {
		t.Fatal("Flush against a hanging Stripe succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Flush took %v; want about CallTimeout", d)
	}
	// The in-flight report is resent, unchanged, once Stripe answers.
	env.fake.SetFault(nil)
	take(t, env.counters, "a", env.period, 2)
	if err := r.Flush(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	if got := env.fake.MeterTotal("cus_a", "api_requests"); got != 3 {
		t.Fatalf("Stripe holds %d; want 3", got)
	}
	if n := len(env.fake.Events()); n != 2 {
		t.Fatalf("Stripe holds %d events; want 2 (the in-flight one, then the new units)", n)
	}
}
