package billing

import (
	"context"
	"github.com/billkit/billkit/internal/fakeclock"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/billkit/billkit/billing/internal/fakestripe"
	"github.com/billkit/billkit/quota"
	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
)

// testClock is a fake clock safe for concurrent use.
type testClock = fakeclock.Clock

func newTestClock(t time.Time) *testClock { return fakeclock.New(t) }

// reportEnts is an in-memory EntitlementStore for the reporter's tests.
type reportEnts struct {
	mu sync.Mutex
	m  map[string]Entitlement
}

var _ EntitlementStore = (*reportEnts)(nil)

func newReportEnts(es ...Entitlement) *reportEnts {
	s := &reportEnts{m: make(map[string]Entitlement)}
	for _, e := range es {
		s.m[e.Subject] = e
	}
	return s
}

func (s *reportEnts) Get(_ context.Context, subject string) (Entitlement, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[subject]
	if !ok {
		return Entitlement{}, ErrNotFound
	}
	return e, nil
}

func (s *reportEnts) Update(_ context.Context, subject string, fn func(*Entitlement) error) (Entitlement, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[subject]
	e.Subject = subject
	if err := fn(&e); err != nil {
		return Entitlement{}, err
	}
	s.m[subject] = e
	return e, nil
}

func (s *reportEnts) SubjectByCustomer(_ context.Context, customerID string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.m {
		if e.CustomerID == customerID {
			return e.Subject, nil
		}
	}
	return "", ErrNotFound
}

func (s *reportEnts) ForEach(ctx context.Context, fn func(Entitlement) error) error {
	s.mu.Lock()
	es := make([]Entitlement, 0, len(s.m))
	for _, e := range s.m {
		es = append(es, e)
	}
	s.mu.Unlock()
	sort.Slice(es, func(i, j int) bool { return es[i].Subject < es[j].Subject })
	for _, e := range es {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

func (s *reportEnts) renew(subject string, next quota.Period) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[subject]
	e.PreviousPeriod, e.Period = e.Period, next
	s.m[subject] = e
}

// testTransport keeps enough idle connections for concurrent reporters
// (http.DefaultTransport keeps 2 per host).
var testTransport = &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}

// stripeAPI returns a Stripe client on url without network retries, so
// that every injected fault reaches the reporter.
func stripeAPI(url string, retries int64) *client.API {
	cfg := &stripe.BackendConfig{
		HTTPClient:        &http.Client{Transport: testTransport, Timeout: 30 * time.Second},
		URL:               stripe.String(url),
		MaxNetworkRetries: stripe.Int64(retries),
		LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull},
	}
	return client.New("sk_test_billkit", &stripe.Backends{
		API:     stripe.GetBackendWithConfig(stripe.APIBackend, cfg),
		Connect: stripe.GetBackendWithConfig(stripe.ConnectBackend, cfg),
		Uploads: stripe.GetBackendWithConfig(stripe.UploadsBackend, cfg),
	})
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newSink returns the sink of mode on fake.
func newSink(t testing.TB, mode UsageMode, url string) UsageSink {
	t.Helper()
	api := stripeAPI(url, 0)
	if mode == ReportTotals {
		s, err := NewUsageRecordSink(api)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s, err := NewMeterEventSink(api, MeterEventSinkConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// withSink returns cfg reporting through s: s becomes the sink of its mode,
// and cfg.Meter's meters are reported in that mode (usage records carry no
// event name).
func withSink(cfg ReporterConfig, s UsageSink) ReporterConfig {
	if s.Mode() == ReportTotals {
		cfg.UsageRecords = s
	} else {
		cfg.MeterEvents = s
	}
	if inner := cfg.Meter; inner != nil && s.Mode() == ReportTotals {
		cfg.Meter = func(e Entitlement) (UsageMeter, bool) {
			m, ok := inner(e)
			m.EventName, m.PriceID = "", "price_metered"
			return m, ok
		}
	}
	return cfg
}

const testMeter = "requests"

func testMeterFunc(e Entitlement) (UsageMeter, bool) {
	return UsageMeter{Name: testMeter, EventName: "api_requests"}, true
}

// includedMeterFunc is testMeterFunc with included units per period not
// reported (a plan that bills overage only).
func includedMeterFunc(included int64) MeterFunc {
	return func(e Entitlement) (UsageMeter, bool) {
		m, ok := testMeterFunc(e)
		m.Included = included
		return m, ok
	}
}

// held returns what fake holds for e, in mode.
func held(fake *fakestripe.Server, mode UsageMode, e Entitlement) int64 {
	if mode == ReportTotals {
		return fake.UsageTotal(e.MeteredItemID)
	}
	return fake.MeterTotal(e.CustomerID, "api_requests")
}

// take counts n units for subject in p.
func take(t testing.TB, st quota.Store, subject string, p quota.Period, n int64) {
	t.Helper()
	if n <= 0 {
		return
	}
	_, err := st.Take(context.Background(), quota.TakeRequest{
		Subject: subject, Meter: testMeter, Period: p, Cost: n, Unlimited: true, ExpireAt: p.End.Add(35 * 24 * time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
}

// crashLeases skips Release while crashed is set: a crashed process
// releases nothing, its lease expires.
type crashLeases struct {
	LeaseStore
	crashed *atomic.Bool
}

func (c crashLeases) Release(ctx context.Context, subject, token string) error {
	if c.crashed.Load() {
		return nil
	}
	return c.LeaseStore.Release(ctx, subject, token)
}

var modes = []UsageMode{ReportTotals, ReportDeltas}

func mustPlans(t testing.TB, plans ...Plan) *Plans {
	t.Helper()
	p, err := NewPlans(plans...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
