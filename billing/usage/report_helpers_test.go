package usage

import (
	"context"
	"fmt"
	"github.com/billkit/billkit/billing"
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

// reportEnts is an in-memory billing.EntitlementStore for the reporter's tests.
type reportEnts struct {
	mu sync.Mutex
	m  map[string]billing.Entitlement
}

var _ billing.EntitlementStore = (*reportEnts)(nil)

func newReportEnts(es ...billing.Entitlement) *reportEnts {
	s := &reportEnts{m: make(map[string]billing.Entitlement)}
	for _, e := range es {
		s.m[e.Subject] = e
	}
	return s
}

func (s *reportEnts) Get(_ context.Context, subject string) (billing.Entitlement, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[subject]
	if !ok {
		return billing.Entitlement{}, billing.ErrNotFound
	}
	return e, nil
}

func (s *reportEnts) Update(_ context.Context, subject string, fn func(*billing.Entitlement) error) (billing.Entitlement, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[subject]
	e.Subject = subject
	if err := fn(&e); err != nil {
		return billing.Entitlement{}, false, err
	}
	s.m[subject] = e
	return e, true, nil
}

func (s *reportEnts) SubjectByCustomer(_ context.Context, customerID string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.m {
		if e.CustomerID == customerID {
			return e.Subject, nil
		}
	}
	return "", billing.ErrNotFound
}

func (s *reportEnts) ForEach(ctx context.Context, fn func(billing.Entitlement) error) error {
	s.mu.Lock()
	es := make([]billing.Entitlement, 0, len(s.m))
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
func newSink(t testing.TB, mode reportMode, url string) sink {
	t.Helper()
	api := stripeAPI(url, 0)
	if mode == reportTotals {
		return newUsageRecordSink(api)
	}
	return newMeterEventSink(api, meterEventConfig{})
}

// withSink returns cfg reporting through s: s becomes the sink of its
// mode, a sink that refuses everything the other, and cfg's meters are
// reported in s's mode (usage records carry no event name).
func withSink(cfg Config, s sink) Config {
	cfg.sinks[s.Mode()-1] = s
	if cfg.sinks[2-s.Mode()] == nil {
		cfg.sinks[2-s.Mode()] = noSink{}
	}
	if inner := cfg.meter; inner != nil && s.Mode() == reportTotals {
		cfg.meter = func(e billing.Entitlement) []meterSpec {
			ms := inner(e)
			for i := range ms {
				ms[i].EventName = ""
				if ms[i].PriceID == "" {
					ms[i].PriceID = "price_metered"
				}
				if ms[i].ItemID == "" {
					ms[i].ItemID = e.MeteredItemID
				}
			}
			return ms
		}
	}
	return cfg
}

// noSink refuses every report.
type noSink struct{}

func (noSink) Mode() reportMode { return 0 }
func (noSink) Report(context.Context, usageReport) error {
	return fmt.Errorf("%w: no sink of this mode in the test", errReportInvalid)
}

const testMeter = "requests"

func testMeterFunc(e billing.Entitlement) []meterSpec {
	return []meterSpec{{Name: testMeter, EventName: "api_requests"}}
}

// includedMeterFunc is testMeterFunc with included units per period not
// reported (a plan that bills overage only).
func includedMeterFunc(included int64) meterFunc {
	return func(e billing.Entitlement) []meterSpec {
		ms := testMeterFunc(e)
		ms[0].Included = included
		return ms
	}
}

// held returns what fake holds for e, in mode.
func held(fake *fakestripe.Server, mode reportMode, e billing.Entitlement) int64 {
	if mode == reportTotals {
		return fake.UsageTotal(e.MeteredItemID)
	}
	return fake.MeterTotal(e.CustomerID, "api_requests")
}

// take counts n units of the requests meter for subject in p.
func take(t testing.TB, st quota.Store, subject string, p quota.Period, n int64) {
	t.Helper()
	takeMeter(t, st, subject, testMeter, p, n)
}

// takeMeter counts n units of meter for subject in p.
func takeMeter(t testing.TB, st quota.Store, subject, meter string, p quota.Period, n int64) {
	t.Helper()
	if n <= 0 {
		return
	}
	_, err := st.Take(context.Background(), quota.TakeRequest{
		Subject: subject, Meter: meter, Period: p, Cost: n, Unlimited: true, ExpireAt: p.End.Add(35 * 24 * time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
}

// crashLeases skips Release while crashed is set: a crashed process
// releases nothing, its lease expires.
type crashLeases struct {
	leaseStore
	crashed *atomic.Bool
}

func (c crashLeases) Release(ctx context.Context, subject, token string) error {
	if c.crashed.Load() {
		return nil
	}
	return c.leaseStore.Release(ctx, subject, token)
}

var modes = []reportMode{reportTotals, reportDeltas}

func mustPlans(t testing.TB, plans ...billing.Plan) *billing.Plans {
	t.Helper()
	p, err := billing.NewPlans(plans...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
