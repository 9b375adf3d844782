package billing_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/internal/testserver"
	"github.com/billkit/billkit/quota"
)

// stripeFixture is stripe-mock's fixture subscription of one version, as
// its listing and GET serve it.
type stripeFixture struct {
	version, apiShape          string
	sub, customer, price, item string
}

// stripeFixtures are the subscription fixtures of the two stripe-mocks.
var stripeFixtures = []stripeFixture{
	{testserver.StripeMockUsageRecords, "2023-10-16", "sub_1N0Qf5LKkAKty0Q8ocjnVxrK", "cus_Nj5B57LZqvnaIg", "price_1Mxd0vLKkAKty0Q8JV1qLL0v", "si_NlycINH4ERs74X"},
	{testserver.StripeMockMeterEvents, "dahlia", "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw", "cus_QXg1o8vcGmoR32", "price_1PgafmB7WZ01zgkW6dKueIc5", "si_QXhVnC2h0Jczwc"},
}

// fixturePeriod is the period the proxy of [stripeMockClient] gives the
// fixture subscriptions.
var fixturePeriod = quota.Period{Start: t0, End: t0.AddDate(0, 1, 0)}

// stripeMockClient returns a client of stripe-mock version behind a proxy
// that gives every current_period_start/end of a subscription or
// subscription item a real period (stripe-mock's fixtures carry equal or
// reversed placeholder times), wherever that version has them.
func stripeMockClient(t testing.TB, version string) *client.API {
	t.Helper()
	sm := testserver.StartStripeMock(t, version)
	target, err := url.Parse(sm.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(resp *http.Response) error {
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		var v any
		if json.Unmarshal(b, &v) == nil {
			setPeriods(v)
			b, _ = json.Marshal(v)
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
		return nil
	}
	proxy := httptest.NewServer(rp)
	t.Cleanup(proxy.Close)
	return client.New("sk_test_billkit", &stripe.Backends{
		API: stripe.GetBackendWithConfig(stripe.APIBackend, &stripe.BackendConfig{
			URL:               stripe.String(proxy.URL),
			MaxNetworkRetries: stripe.Int64(0),
			LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull},
		}),
	})
}

// setPeriods sets fixturePeriod on every object of v that has
// current_period_start and current_period_end.
func setPeriods(v any) {
	switch o := v.(type) {
	case map[string]any:
		_, s := o["current_period_start"]
		_, e := o["current_period_end"]
		if s && e {
			o["current_period_start"], o["current_period_end"] = fixturePeriod.Start.Unix(), fixturePeriod.End.Unix()
		}
		for _, c := range o {
			setPeriods(c)
		}
	case []any:
		for _, c := range o {
			setPeriods(c)
		}
	}
}

func fixturePlans(t testing.TB, fx stripeFixture) *billing.Plans {
	t.Helper()
	p, err := billing.NewPlans(billing.Plan{Tier: "team", PriceID: fx.price, Included: 500})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestReconcile: a subject whose subscription events were all missed (it is
// still pending after its checkout) is repaired from Stripe's listing, in
// the shape of either stripe-mock, the change is reported, and a second run
// finds nothing to repair.
func TestReconcile(t *testing.T) {
	t.Parallel()
	for _, fx := range stripeFixtures {
		t.Run(fx.apiShape, func(t *testing.T) {
			t.Parallel()
			testReconcile(t, fx)
		})
	}
}

func testReconcile(t *testing.T, fx stripeFixture) {
	ctx := context.Background()
	sh := newest(t)
	api := stripeMockClient(t, fx.version)
	store := billing.NewMemoryStore(billing.MemoryOptions{})
	h := newHarness(t, store, func(c *billing.Config) {
		c.Plans = fixturePlans(t, fx)
		c.Stripe = api
	})
	h.clock.Set(t0.Add(time.Hour)) // reconcile runs after the checkout event
	h.deliver(sh.event("evt_co", evCheckout, sh.session("acme", fx.customer, ""), sec(0)))
	h.deliver(sh.event("evt_co_other", evCheckout, sh.session("ghost", "cus_ghost", "sub_gone"), sec(0)))
	// ghost's subscription is live here but unknown to Stripe's listing.
	h.deliver(sh.event("evt_ghost", evCreated, sh.sub(sub{ID: "sub_gone", Customer: "cus_ghost", Subject: "ghost",
		Status: "active", Price: fx.price}), sec(1)))
	if e := h.get("acme"); e.Status != billing.StatusPending {
		t.Fatalf("before reconcile acme is %s, want pending", e.Status)
	}

	rep, err := h.lc.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Listed < 1 {
		t.Fatalf("Reconcile listed %d subscriptions, want the fixture", rep.Listed)
	}
	if !slices.Contains(rep.Repaired, "acme") || slices.Contains(rep.Repaired, "ghost") {
		t.Fatalf("Repaired = %v, want acme (and not ghost)", rep.Repaired)
	}
	if e := h.get("acme"); e.Status != billing.StatusActive || e.Tier != "team" || e.SubscriptionID != fx.sub || e.Period != fixturePeriod {
		t.Fatalf("after reconcile acme = %s/%s on %s over %v, want active/team on the fixture over %v",
			e.Status, e.Tier, e.SubscriptionID, e.Period, fixturePeriod)
	}
	if !slices.Contains(rep.Missing, "ghost") {
		t.Errorf("Missing = %v, want ghost (its live subscription is not listed)", rep.Missing)
	}

	rep2, err := h.lc.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep2.Repaired) != 0 {
		t.Fatalf("a second reconcile repaired %v, want nothing", rep2.Repaired)
	}

	// A later event of the subscription in any other shape keeps the
	// reconciled period: the same period is read from either place.
	for _, other := range shapes(t) {
		s := other.sub(sub{ID: fx.sub, Customer: fx.customer, Subject: "acme", Status: "active", Price: fx.price,
			Start: fixturePeriod.Start, End: fixturePeriod.End})
		h.deliver(other.event("evt_after_"+other.Name, evUpdated, s, h.clock.Now().Add(time.Minute)))
		if e := h.get("acme"); e.Period != fixturePeriod || e.Status != billing.StatusActive || e.Tier != "team" {
			t.Fatalf("after a %s event: %s/%s over %v, want the reconciled active/team over %v", other.Name, e.Status, e.Tier, e.Period, fixturePeriod)
		}
	}
}

// TestReconcileNeedsStripe: without a client Reconcile fails clearly.
func TestReconcileNeedsStripe(t *testing.T) {
	t.Parallel()
	h := newHarness(t, billing.NewMemoryStore(billing.MemoryOptions{}), nil)
	if _, err := h.lc.Reconcile(context.Background()); !errors.Is(err, billing.ErrInvalidConfig) {
		t.Fatalf("err = %v, want ErrInvalidConfig", err)
	}
}

// TestRefetch: with Refetch, an event's payload is replaced by the
// subscription read from Stripe (in either stripe-mock's shape), so a stale
// or wrong payload cannot move the entitlement.
func TestRefetch(t *testing.T) {
	t.Parallel()
	for _, fx := range stripeFixtures {
		t.Run(fx.apiShape, func(t *testing.T) {
			t.Parallel()
			sh := newest(t)
			api := stripeMockClient(t, fx.version)
			h := newHarness(t, billing.NewMemoryStore(billing.MemoryOptions{}), func(c *billing.Config) {
				c.Plans = fixturePlans(t, fx)
				c.Stripe = api
				c.Refetch = true
			})
			// The payload claims "canceled"; Stripe (the fixture) says active.
			payload := sh.sub(sub{ID: fx.sub, Customer: fx.customer, Subject: "acme", Status: "canceled", Price: fx.price})
			h.deliver(sh.event("evt_up", evUpdated, payload, sec(1)))
			h.deliver(sh.event("evt_co", evCheckout, sh.session("acme", fx.customer, fx.sub), sec(0)))
			e := h.get("acme")
			if e.Status != billing.StatusActive || e.Tier != "team" || e.SubscriptionID != fx.sub || e.Period != fixturePeriod {
				t.Fatalf("refetched entitlement = %s/%s on %s over %v, want active/team over %v", e.Status, e.Tier, e.SubscriptionID, e.Period, fixturePeriod)
			}
			h.deliver(sh.event("evt_paid", evPaid, sh.inv(inv{Sub: fx.sub, Customer: fx.customer, Subject: "acme", Price: fx.price}), sec(2)))
			if e := h.get("acme"); e.Status != billing.StatusActive {
				t.Fatalf("after invoice.paid with refetch: %s, want active", e.Status)
			}
		})
	}
}
