package billing_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/quota"
	"github.com/billkit/billkit/webhook/webhooktest"
)

// This file tests the lifecycle's reading of Stripe objects of every API
// version (V1), its refusal of events it cannot read (V2) and its parking
// of events of customers not linked to a subject yet (V3), in every shape
// (V4).

// eventErrors collects the EventErrors passed to Config.OnEventError. It is
// safe for concurrent use.
type eventErrors struct {
	mu   sync.Mutex
	list []*billing.EventError
	ch   chan *billing.EventError // when set, each report is sent here too
}

func (r *eventErrors) hook(_ context.Context, err *billing.EventError) {
	r.mu.Lock()
	r.list = append(r.list, err)
	r.mu.Unlock()
	if r.ch != nil {
		r.ch <- err
	}
}

func (r *eventErrors) all() []*billing.EventError {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*billing.EventError(nil), r.list...)
}

// logRecords is an io.Writer for a slog JSON handler that keeps every
// record. It is safe for concurrent use.
type logRecords struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logRecords) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logRecords) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// atLevel returns the records logged at level, decoded.
func (l *logRecords) atLevel(t testing.TB, level slog.Level) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(l.buf.Bytes(), []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("log record %q: %v", line, err)
		}
		if rec[slog.LevelKey] == level.String() {
			out = append(out, rec)
		}
	}
	return out
}

// reportingHarness is a harness on a memory store whose lifecycle logs to
// the returned records and reports to the returned collector.
func reportingHarness(t *testing.T, mod func(*billing.Config)) (*harness, *eventErrors, *logRecords) {
	t.Helper()
	reports, logs := &eventErrors{}, &logRecords{}
	h := newHarness(t, billing.NewMemoryStore(billing.MemoryOptions{}), func(c *billing.Config) {
		c.OnEventError = reports.hook
		c.Logger = logs.logger()
		if mod != nil {
			mod(c)
		}
	})
	return h, reports, logs
}

// deliverOne posts one signed event and returns the handler's status.
func deliverOne(t testing.TB, h *harness, event []byte) int {
	t.Helper()
	return webhooktest.Deliver(t, h.h, testSecret, event)[0]
}

// parked returns what store parked for customer.
func parked(t testing.TB, store any, customer string) map[string][]byte {
	t.Helper()
	ps, ok := billing.AsParking(store)
	if !ok {
		t.Fatalf("%T does not implement billing.ParkingStore", store)
	}
	m, err := ps.Parked(context.Background(), customer)
	if err != nil {
		t.Fatalf("Parked(%s): %v", customer, err)
	}
	return m
}

func parkedIDs(m map[string][]byte) []string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// requireNothingStored fails t when subject has an entitlement.
func requireNothingStored(t testing.TB, h *harness, subject string) {
	t.Helper()
	if e, err := h.store.Get(context.Background(), subject); !errors.Is(err, billing.ErrNotFound) {
		t.Fatalf("Get(%s) = %+v, %v; want ErrNotFound", subject, e, err)
	}
}

// requireReport fails t unless reps is exactly one report of event id of
// type typ in sh's API version, wrapping target.
func requireReport(t testing.TB, reps []*billing.EventError, target error, id string, typ stripe.EventType, sh shape) {
	t.Helper()
	if len(reps) != 1 {
		t.Fatalf("OnEventError called %d times (%v), want once", len(reps), reps)
	}
	r := reps[0]
	if !errors.Is(r, target) {
		t.Errorf("reported error %v does not wrap %v", r, target)
	}
	if r.EventID != id || r.EventType != string(typ) || r.APIVersion != sh.APIVersion {
		t.Errorf("reported event %s/%s/%s, want %s/%s/%s", r.EventID, r.EventType, r.APIVersion, id, typ, sh.APIVersion)
	}
}

func decodeStripeEvent(t testing.TB, payload []byte) *stripe.Event {
	t.Helper()
	var ev stripe.Event
	if err := json.Unmarshal(payload, &ev); err != nil {
		t.Fatal(err)
	}
	return &ev
}

// firstPeriod is the period sh.sub and sh.inv give by default.
var firstPeriod = quota.Period{Start: t0, End: t0.AddDate(0, 1, 0)}

// withoutPeriod removes current_period_start/end from the subscription
// object o, at its top level and from every item.
func withoutPeriod(o map[string]any) map[string]any {
	delete(o, "current_period_start")
	delete(o, "current_period_end")
	items, _ := o["items"].(map[string]any)
	data, _ := items["data"].([]any)
	for _, it := range data {
		if m, ok := it.(map[string]any); ok {
			delete(m, "current_period_start")
			delete(m, "current_period_end")
		}
	}
	return o
}

// TestNoPeriodRefused (V2): a subscription event of billkit's whose period
// is absent everywhere is refused (500), stores nothing, is logged at
// ERROR with the event's identity and passed to OnEventError; Stripe's
// redelivery of the corrected event, with the same ID, is then applied.
func TestNoPeriodRefused(t *testing.T) {
	t.Parallel()
	forShapes(t, func(t *testing.T, sh shape) {
		h, reports, logs := reportingHarness(t, nil)
		bad := sh.event("evt_np", evCreated, withoutPeriod(sh.sub(sub{Status: "active"})), sec(1))
		if st := deliverOne(t, h, bad); st != http.StatusInternalServerError {
			t.Fatalf("event without a period answered %d, want 500", st)
		}
		requireNothingStored(t, h, "alice")
		if _, err := h.store.SubjectByCustomer(context.Background(), "cus_1"); !errors.Is(err, billing.ErrNotFound) {
			t.Errorf("SubjectByCustomer(cus_1) error = %v after a refused event, want ErrNotFound", err)
		}
		if p := parked(t, h.store, "cus_1"); len(p) != 0 {
			t.Errorf("refused event parked: %v", parkedIDs(p))
		}
		requireReport(t, reports.all(), billing.ErrUnreadable, "evt_np", evCreated, sh)

		errs := logs.atLevel(t, slog.LevelError)
		if len(errs) != 1 {
			t.Fatalf("%d ERROR records, want 1: %v", len(errs), errs)
		}
		for k, want := range map[string]string{"event_id": "evt_np", "event_type": string(evCreated), "api_version": sh.APIVersion} {
			if got := errs[0][k]; got != want {
				t.Errorf("ERROR record %s = %v, want %q (record %v)", k, got, want, errs[0])
			}
		}

		fixed := sh.event("evt_np", evCreated, sh.sub(sub{Status: "active"}), sec(1))
		if st := deliverOne(t, h, fixed); st != http.StatusOK {
			t.Fatalf("redelivery of the corrected event answered %d, want 200", st)
		}
		e := h.get("alice")
		if e.Status != billing.StatusActive || e.Tier != "pro" || e.Period != firstPeriod {
			t.Fatalf("after the corrected redelivery: %s %q over %v, want active pro over %v", e.Status, e.Tier, e.Period, firstPeriod)
		}
		if n := len(reports.all()); n != 1 {
			t.Errorf("OnEventError called %d times in all, want once (for the refusal only)", n)
		}
		if n := len(logs.atLevel(t, slog.LevelError)); n != 1 {
			t.Errorf("%d ERROR records in all, want 1", n)
		}
	})
}

// withoutInvoiceSubscription removes the subscription from the invoice
// object o: top-level "subscription" (before basil) and
// parent.subscription_details.subscription (basil on).
func withoutInvoiceSubscription(o map[string]any) map[string]any {
	delete(o, "subscription")
	if p, ok := o["parent"].(map[string]any); ok {
		if d, ok := p["subscription_details"].(map[string]any); ok {
			delete(d, "subscription")
		}
	}
	return o
}

// manualInvoice turns the invoice object o into a manual one that bills no
// subscription: no subscription anywhere and lines that are invoice items.
func manualInvoice(o map[string]any) map[string]any {
	withoutInvoiceSubscription(o)
	o["billing_reason"] = "manual"
	delete(o, "subscription_details")
	if _, ok := o["parent"]; ok {
		o["parent"] = nil
	}
	lines, _ := o["lines"].(map[string]any)
	data, _ := lines["data"].([]any)
	for _, li := range data {
		m, ok := li.(map[string]any)
		if !ok {
			continue
		}
		delete(m, "subscription")
		delete(m, "subscription_item")
		if _, ok := m["type"]; ok {
			m["type"] = "invoiceitem"
		}
		if _, ok := m["parent"]; ok {
			m["parent"] = map[string]any{"type": "invoice_item_details", "subscription_item_details": nil,
				"invoice_item_details": map[string]any{"invoice_item": "ii_1", "proration": false,
					"proration_details": map[string]any{"credited_items": nil}, "subscription": nil}}
		}
	}
	return o
}

// TestInvoiceWithoutSubscriptionRefused (V2): an invoice.paid that bills a
// subscription (billing_reason subscription_cycle) but names it nowhere is
// refused and reported; a manual invoice of no subscription is
// acknowledged and changes nothing.
func TestInvoiceWithoutSubscriptionRefused(t *testing.T) {
	t.Parallel()
	forShapes(t, func(t *testing.T, sh shape) {
		h, reports, _ := reportingHarness(t, nil)
		o := withoutInvoiceSubscription(sh.inv(inv{FinalizedAt: sec(1)}))
		if o["billing_reason"] != "subscription_cycle" {
			t.Fatalf("billing_reason = %v, want subscription_cycle", o["billing_reason"])
		}
		if st := deliverOne(t, h, sh.event("evt_nosub", evPaid, o, sec(2))); st != http.StatusInternalServerError {
			t.Fatalf("subscription invoice without a subscription answered %d, want 500", st)
		}
		requireNothingStored(t, h, "alice")
		requireReport(t, reports.all(), billing.ErrUnreadable, "evt_nosub", evPaid, sh)

		manual := manualInvoice(sh.inv(inv{ID: "in_manual", FinalizedAt: sec(1)}))
		if st := deliverOne(t, h, sh.event("evt_manual", evPaid, manual, sec(3))); st != http.StatusOK {
			t.Fatalf("manual invoice answered %d, want 200", st)
		}
		requireNothingStored(t, h, "alice")
		if p := parked(t, h.store, "cus_1"); len(p) != 0 {
			t.Errorf("manual invoice parked: %v", parkedIDs(p))
		}
		if n := len(reports.all()); n != 1 {
			t.Errorf("OnEventError called %d times in all, want once (the manual invoice is no error)", n)
		}
	})
}

// TestUnknownPriceOfBillkitSubscriptionRefused (V2): a subscription with
// billkit's metadata whose price is no configured plan's is a
// misconfiguration, refused and reported; the same subscription without
// metadata, of an unknown customer, is someone else's: acknowledged,
// neither stored nor parked.
func TestUnknownPriceOfBillkitSubscriptionRefused(t *testing.T) {
	t.Parallel()
	forShapes(t, func(t *testing.T, sh shape) {
		h, reports, _ := reportingHarness(t, nil)
		ours := sh.event("evt_unknown_price", evCreated, sh.sub(sub{Status: "active", Price: "price_unknown"}), sec(1))
		if st := deliverOne(t, h, ours); st != http.StatusInternalServerError {
			t.Fatalf("billkit subscription of an unknown price answered %d, want 500", st)
		}
		requireNothingStored(t, h, "alice")
		requireReport(t, reports.all(), billing.ErrUnreadable, "evt_unknown_price", evCreated, sh)

		theirs := sh.event("evt_theirs", evCreated, sh.sub(sub{Status: "active", Price: "price_unknown", NoMetadata: true}), sec(2))
		if st := deliverOne(t, h, theirs); st != http.StatusOK {
			t.Fatalf("foreign subscription of an unknown price answered %d, want 200", st)
		}
		requireNothingStored(t, h, "alice")
		if p := parked(t, h.store, "cus_1"); len(p) != 0 {
			t.Errorf("foreign subscription parked: %v", parkedIDs(p))
		}
		n := 0
		if err := h.store.ForEach(context.Background(), func(billing.Entitlement) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%d entitlements stored, want 0", n)
		}
		if n := len(reports.all()); n != 1 {
			t.Errorf("OnEventError called %d times in all, want once", n)
		}
	})
}

// TestInvoiceNewShapeDrivesTransitions (V1, B1): invoices of the newest
// shape (subscription under parent, price under pricing) drive active →
// past_due → active exactly as invoices of the 2023-10-16 shape do.
func TestInvoiceNewShapeDrivesTransitions(t *testing.T) {
	t.Parallel()
	steps := []struct {
		name   string
		event  func(sh shape) []byte
		status billing.Status
	}{
		{"subscription created active", func(sh shape) []byte {
			return sh.event("evt_cr", evCreated, sh.sub(sub{Status: "active", Metered: true}), sec(1))
		}, billing.StatusActive},
		{"payment failed", func(sh shape) []byte {
			return sh.event("evt_fail", evFailed, sh.inv(inv{ID: "in_2", FinalizedAt: sec(5)}), sec(10))
		}, billing.StatusPastDue},
		{"paid after the failure", func(sh shape) []byte {
			return sh.event("evt_paid", evPaid, sh.inv(inv{ID: "in_2", FinalizedAt: sec(5)}), sec(11))
		}, billing.StatusActive},
	}
	all := shapes(t)
	// Put the newest first and the oldest second, then any others.
	order := []shape{newest(t), oldest(t)}
	for _, sh := range all {
		if sh.Name != order[0].Name && sh.Name != order[1].Name {
			order = append(order, sh)
		}
	}
	states := map[string][]string{}
	for _, sh := range order {
		h := newHarness(t, billing.NewMemoryStore(billing.MemoryOptions{}), nil)
		for _, st := range steps {
			h.deliver(st.event(sh))
			e := h.get("alice")
			if e.Status != st.status || e.Tier != "pro" || e.Period != firstPeriod || e.SubscriptionID != "sub_1" {
				t.Errorf("%s: after %q: %s %q over %v on %q, want %s pro over %v on sub_1",
					sh.Name, st.name, e.Status, e.Tier, e.Period, e.SubscriptionID, st.status, firstPeriod)
			}
			if st.status == billing.StatusPastDue && !e.GraceUntil.Equal(sec(5).Add(gracePeriod)) {
				t.Errorf("%s: GraceUntil = %v, want the failed invoice's finalization + 7 days", sh.Name, e.GraceUntil)
			}
			states[sh.Name] = append(states[sh.Name], comparable(t, e))
		}
	}
	ref := order[1] // the 2023-10-16 shape
	for _, sh := range order {
		for i, st := range steps {
			if got, want := states[sh.Name][i], states[ref.Name][i]; got != want {
				t.Errorf("after %q the %s shape gives\n%s\nthe %s shape\n%s", st.name, sh.Name, got, ref.Name, want)
			}
		}
	}
}

// TestUnmappedFirstSurvivesRestart (V3): events of a Dashboard-style
// subscription (no billkit metadata) that arrive before the checkout that
// links their customer are parked in Redis, survive a restart of the
// process, and are applied when the checkout arrives at the new process,
// ending where in-order delivery ends. Duplicates change nothing.
func TestUnmappedFirstSurvivesRestart(t *testing.T) {
	t.Parallel()
	for _, sh := range []shape{newest(t), oldest(t)} {
		t.Run(sh.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			checkoutEv := sh.event("evt_co", evCheckout, sh.session("alice", "cus_1", "sub_1"), sec(0))
			created := sh.event("evt_cr", evCreated, sh.sub(sub{Status: "incomplete", Metered: true, NoMetadata: true}), sec(1))
			paid := sh.event("evt_paid", evPaid, sh.inv(inv{FinalizedAt: sec(1), NoMetadata: true}), sec(2))

			ref := newHarness(t, billing.NewMemoryStore(billing.MemoryOptions{}), nil)
			ref.deliver(checkoutEv, created, paid)
			want := ref.get("alice")

			rdb := realRedis(t)

			// The first process gets the subscription's events, each twice
			// through the webhook handler (its idempotency store answers
			// the copy) and once more straight to the lifecycle.
			first := newHarness(t, newRedisStore(t, rdb), nil)
			first.deliver(created, created, paid, paid)
			for _, ev := range [][]byte{created, paid} {
				if err := first.lc.HandleEvent(ctx, decodeStripeEvent(t, ev)); err != nil {
					t.Fatalf("duplicate %s: %v", webhooktest.EventID(ev), err)
				}
			}
			requireNothingStored(t, first, "alice")
			if got := parkedIDs(parked(t, first.store, "cus_1")); len(got) != 2 || got[0] != "evt_cr" || got[1] != "evt_paid" {
				t.Fatalf("Parked(cus_1) = %v, want [evt_cr evt_paid]", got)
			}

			// The restarted process: a new store and lifecycle on the same
			// Redis and prefix, a new (empty) webhook idempotency store.
			second := newHarness(t, newRedisStore(t, rdb), nil)
			second.deliver(checkoutEv)
			check := func(when string) {
				t.Helper()
				e := second.get("alice")
				if e.Status != billing.StatusActive || e.Tier != "pro" || e.Period != firstPeriod ||
					e.SubscriptionID != "sub_1" || e.CustomerID != "cus_1" || e.MeteredItemID != "si_metered" {
					t.Errorf("%s: %s %q over %v, subscription %q, customer %q, metered item %q; want active pro over %v, sub_1, cus_1, si_metered",
						when, e.Status, e.Tier, e.Period, e.SubscriptionID, e.CustomerID, e.MeteredItemID, firstPeriod)
				}
				if got, want := comparable(t, e), comparable(t, want); got != want {
					t.Errorf("%s: entitlement\n%s\nin-order delivery gives\n%s", when, got, want)
				}
				if p := parked(t, second.store, "cus_1"); len(p) != 0 {
					t.Errorf("%s: Parked(cus_1) = %v, want empty", when, parkedIDs(p))
				}
			}
			check("after the checkout")

			// Stripe's retries of the early events reach the new process,
			// whose idempotency store has not seen them: applied again,
			// they change nothing and are not parked again.
			second.deliver(created, paid)
			check("after redeliveries")
		})
	}
}

// TestLinkAppliesParked (V3): a subscription created in the Dashboard (no
// billkit metadata) is parked until Link links its customer to a subject,
// which then has the subscription's tier and period; a subject linked to
// one customer cannot be linked to another.
func TestLinkAppliesParked(t *testing.T) {
	t.Parallel()
	forShapes(t, func(t *testing.T, sh shape) {
		ctx := context.Background()
		h, reports, _ := reportingHarness(t, nil)
		h.deliver(sh.event("evt_dash", evCreated, sh.sub(sub{ID: "sub_9", Customer: "cus_9", Status: "active", Metered: true, NoMetadata: true}), sec(1)))
		requireNothingStored(t, h, "bob")
		if got := parkedIDs(parked(t, h.store, "cus_9")); len(got) != 1 || got[0] != "evt_dash" {
			t.Fatalf("Parked(cus_9) = %v, want [evt_dash]", got)
		}

		if err := h.lc.Link(ctx, "bob", "cus_9"); err != nil {
			t.Fatalf("Link(bob, cus_9): %v", err)
		}
		e := h.get("bob")
		if e.Status != billing.StatusActive || e.Tier != "pro" || e.Period != firstPeriod ||
			e.SubscriptionID != "sub_9" || e.CustomerID != "cus_9" || e.MeteredItemID != "si_metered" {
			t.Fatalf("after Link: %s %q over %v, subscription %q, customer %q, metered item %q; want active pro over %v, sub_9, cus_9, si_metered",
				e.Status, e.Tier, e.Period, e.SubscriptionID, e.CustomerID, e.MeteredItemID, firstPeriod)
		}
		if p := parked(t, h.store, "cus_9"); len(p) != 0 {
			t.Errorf("Parked(cus_9) = %v after Link, want empty", parkedIDs(p))
		}
		if s, err := h.store.SubjectByCustomer(ctx, "cus_9"); err != nil || s != "bob" {
			t.Errorf("SubjectByCustomer(cus_9) = %q, %v; want bob", s, err)
		}
		if l, err := h.limits.Limits(ctx, "bob", quota.DefaultMeter); err != nil || l.Plan != "pro" || l.Period != firstPeriod {
			t.Errorf("Limits(bob) = %+v, %v; want the pro plan over %v", l, err, firstPeriod)
		}

		// Linking again to the same customer is a no-op; to another one,
		// a conflict that changes nothing.
		if err := h.lc.Link(ctx, "bob", "cus_9"); err != nil {
			t.Errorf("Link(bob, cus_9) again: %v", err)
		}
		if err := h.lc.Link(ctx, "bob", "cus_other"); !errors.Is(err, billing.ErrConflict) {
			t.Fatalf("Link(bob, cus_other) error = %v, want ErrConflict", err)
		}
		if got := h.get("bob"); got.CustomerID != "cus_9" || got.Status != billing.StatusActive {
			t.Errorf("after the refused Link: customer %q, %s; want cus_9, active", got.CustomerID, got.Status)
		}
		if _, err := h.store.SubjectByCustomer(ctx, "cus_other"); !errors.Is(err, billing.ErrNotFound) {
			t.Errorf("SubjectByCustomer(cus_other) error = %v, want ErrNotFound", err)
		}

		// A later event of the linked customer applies at once.
		h.deliver(sh.event("evt_dash_fail", evFailed, sh.inv(inv{ID: "in_9", Sub: "sub_9", Customer: "cus_9", FinalizedAt: sec(5), NoMetadata: true}), sec(6)))
		if got := h.get("bob"); got.Status != billing.StatusPastDue {
			t.Errorf("after a failed payment of the linked customer: %s, want past_due", got.Status)
		}
		if p := parked(t, h.store, "cus_9"); len(p) != 0 {
			t.Errorf("event of a linked customer parked: %v", parkedIDs(p))
		}
		if n := len(reports.all()); n != 0 {
			t.Errorf("OnEventError called %d times, want never", n)
		}
	})
}

// signalHandler is a slog.Handler that signals ch, without blocking, for
// every record whose message is msg.
type signalHandler struct {
	msg string
	ch  chan<- struct{}
}

func (h signalHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h signalHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		select {
		case h.ch <- struct{}{}:
		default:
		}
	}
	return nil
}

func (h signalHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h signalHandler) WithGroup(string) slog.Handler      { return h }

// TestParkedDroppedAfterBound (V3): the sweep of Run drops events parked
// longer than ParkFor and reports each as ErrUnmapped; events parked
// within the bound stay, also beside a dropped one of the same customer.
func TestParkedDroppedAfterBound(t *testing.T) {
	t.Parallel()
	forShapes(t, func(t *testing.T, sh shape) {
		reports := &eventErrors{ch: make(chan *billing.EventError, 16)}
		swept := make(chan struct{}, 1)
		h := newHarness(t, billing.NewMemoryStore(billing.MemoryOptions{}), func(c *billing.Config) {
			c.ParkFor = time.Hour
			c.ReconcileEvery = 24 * time.Hour
			c.OnEventError = reports.hook
			c.Logger = slog.New(signalHandler{msg: "billing: parked events swept", ch: swept})
		})
		dash := func(id, subID, customer string, at time.Time) []byte {
			return sh.event(id, evCreated, sh.sub(sub{ID: subID, Customer: customer, Status: "active", NoMetadata: true}), at)
		}
		h.deliver(dash("evt_old1", "sub_1", "cus_1", sec(1)), dash("evt_old3", "sub_3", "cus_3", sec(2)))
		h.clock.Add(2 * time.Hour)
		h.deliver(dash("evt_new2", "sub_2", "cus_2", sec(3)), dash("evt_new3", "sub_3", "cus_3", sec(4)))
		for cus, want := range map[string]int{"cus_1": 1, "cus_2": 1, "cus_3": 2} {
			if n := len(parked(t, h.store, cus)); n != want {
				t.Fatalf("Parked(%s) holds %d events before the sweep, want %d", cus, n, want)
			}
		}

		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- h.lc.Run(ctx) }()

		guard := time.NewTimer(5 * time.Second) // failure guard only
		defer guard.Stop()
		dropped := map[string]bool{}
		for len(dropped) < 2 {
			select {
			case ee := <-reports.ch:
				if !errors.Is(ee, billing.ErrUnmapped) {
					t.Errorf("report %v does not wrap ErrUnmapped", ee)
				}
				if ee.EventType != string(evCreated) || ee.APIVersion != sh.APIVersion {
					t.Errorf("report of %s: type %q, API version %q; want %s, %s", ee.EventID, ee.EventType, ee.APIVersion, evCreated, sh.APIVersion)
				}
				dropped[ee.EventID] = true
			case <-guard.C:
				t.Fatalf("no report of both old parked events; got %v", dropped)
			}
		}
		select {
		case <-swept:
		case <-guard.C:
			t.Fatal("the sweep did not finish")
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run returned %v, want nil", err)
			}
		case <-guard.C:
			t.Fatal("Run did not return after its context ended")
		}

		if !dropped["evt_old1"] || !dropped["evt_old3"] {
			t.Errorf("dropped %v, want evt_old1 and evt_old3", dropped)
		}
		for _, ee := range reports.all() {
			if ee.EventID == "evt_new2" || ee.EventID == "evt_new3" {
				t.Errorf("event parked within the bound reported: %v", ee)
			}
		}
		if n := len(reports.all()); n != 2 {
			t.Errorf("OnEventError called %d times, want 2", n)
		}
		if p := parked(t, h.store, "cus_1"); len(p) != 0 {
			t.Errorf("Parked(cus_1) = %v after the sweep, want empty", parkedIDs(p))
		}
		if got := parkedIDs(parked(t, h.store, "cus_2")); len(got) != 1 || got[0] != "evt_new2" {
			t.Errorf("Parked(cus_2) = %v after the sweep, want [evt_new2]", got)
		}
		if got := parkedIDs(parked(t, h.store, "cus_3")); len(got) != 1 || got[0] != "evt_new3" {
			t.Errorf("Parked(cus_3) = %v after the sweep, want [evt_new3]", got)
		}
		n := 0
		if err := h.store.ForEach(context.Background(), func(billing.Entitlement) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%d entitlements stored, want 0", n)
		}
	})
}

// TestParkBound (V3): a customer's parked events are bounded; one more
// distinct event is refused (500, so Stripe retries it) and reported as
// ErrUnmapped, while a redelivery of a parked event still succeeds.
func TestParkBound(t *testing.T) {
	t.Parallel()
	forShapes(t, func(t *testing.T, sh shape) {
		ctx := context.Background()
		store, err := billing.NewRedisStore(miniRedis(t), billing.RedisOptions{MaxParked: 2})
		if err != nil {
			t.Fatal(err)
		}
		reports := &eventErrors{}
		h := newHarness(t, store, func(c *billing.Config) { c.OnEventError = reports.hook })
		ev := func(id string, n int) []byte {
			return sh.event(id, evUpdated, sh.sub(sub{Status: "active", NoMetadata: true, Start: sec(n), End: sec(n).AddDate(0, 1, 0)}), sec(n))
		}
		e1, e2, e3 := ev("evt_p1", 1), ev("evt_p2", 2), ev("evt_p3", 3)
		h.deliver(e1, e2)
		if st := deliverOne(t, h, e3); st != http.StatusInternalServerError {
			t.Fatalf("third distinct parked event answered %d, want 500", st)
		}
		reps := reports.all()
		requireReport(t, reps, billing.ErrUnmapped, "evt_p3", evUpdated, sh)
		if len(reps) == 1 && !errors.Is(reps[0], billing.ErrParkFull) {
			t.Errorf("report %v does not wrap ErrParkFull", reps[0])
		}
		if got := parkedIDs(parked(t, store, "cus_1")); len(got) != 2 || got[0] != "evt_p1" || got[1] != "evt_p2" {
			t.Fatalf("Parked(cus_1) = %v, want [evt_p1 evt_p2]", got)
		}

		// A redelivery of a parked event: through the handler (which
		// knows it), straight to the lifecycle, and to a restarted
		// process whose idempotency store does not know it.
		if st := deliverOne(t, h, e1); st != http.StatusOK {
			t.Errorf("redelivery of evt_p1 answered %d, want 200", st)
		}
		if err := h.lc.HandleEvent(ctx, decodeStripeEvent(t, e2)); err != nil {
			t.Errorf("HandleEvent(evt_p2) again: %v", err)
		}
		restarted := newHarness(t, store, func(c *billing.Config) { c.OnEventError = reports.hook })
		if st := deliverOne(t, restarted, e1); st != http.StatusOK {
			t.Errorf("redelivery of evt_p1 to a restarted process answered %d, want 200", st)
		}
		if n := len(reports.all()); n != 1 {
			t.Errorf("OnEventError called %d times in all, want once", n)
		}
		if got := parkedIDs(parked(t, store, "cus_1")); len(got) != 2 || got[0] != "evt_p1" || got[1] != "evt_p2" {
			t.Errorf("Parked(cus_1) = %v after redeliveries, want [evt_p1 evt_p2]", got)
		}
		requireNothingStored(t, h, "alice")
	})
}

// TestLinkRefusesAnotherSubjectsCustomer: Link never moves a customer that
// is linked to one subject over to another (whose events would then be
// applied to the wrong subject).
func TestLinkRefusesAnotherSubjectsCustomer(t *testing.T) {
	t.Parallel()
	forShapes(t, func(t *testing.T, sh shape) {
		ctx := context.Background()
		h := newHarness(t, billing.NewMemoryStore(billing.MemoryOptions{}), nil)
		h.deliver(
			sh.event("evt_co", evCheckout, sh.session("alice", "cus_1", "sub_1"), sec(0)),
			sh.event("evt_cr", evCreated, sh.sub(sub{Status: "active"}), sec(1)),
		)
		if err := h.lc.Link(ctx, "bob", "cus_1"); !errors.Is(err, billing.ErrConflict) {
			t.Fatalf("Link(bob, alice's customer) = %v, want ErrConflict", err)
		}
		if s, err := h.store.SubjectByCustomer(ctx, "cus_1"); err != nil || s != "alice" {
			t.Fatalf("cus_1 maps to %q, %v; want alice", s, err)
		}
		if err := h.lc.Link(ctx, "alice", "cus_1"); err != nil {
			t.Fatalf("Link(alice, her own customer) = %v, want nil", err)
		}
		h.deliver(sh.event("evt_fail", evFailed, sh.inv(inv{NoMetadata: true, FinalizedAt: sec(2)}), sec(3)))
		if e := h.get("alice"); e.Status != billing.StatusPastDue {
			t.Fatalf("alice after her failed invoice: %s, want past_due", e.Status)
		}
	})
}
