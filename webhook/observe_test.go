package webhook_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/billkit/billkit/webhook"
	"github.com/billkit/billkit/webhook/webhooktest"
)

type ctxMark struct{}

// observed records what an Observer sees.
type observed struct {
	mu  sync.Mutex
	got []webhook.Delivery
	ctx []context.Context // Done's contexts
}

func (d *observed) observer() webhook.Observer {
	return webhook.Observer{
		Start: func(ctx context.Context) context.Context { return context.WithValue(ctx, ctxMark{}, "started") },
		Done: func(ctx context.Context, dl webhook.Delivery) {
			d.mu.Lock()
			d.got = append(d.got, dl)
			d.ctx = append(d.ctx, ctx)
			d.mu.Unlock()
		},
	}
}

func (d *observed) last(t *testing.T) webhook.Delivery {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.got) == 0 {
		t.Fatal("no delivery observed")
	}
	if d.ctx[len(d.ctx)-1].Value(ctxMark{}) != "started" {
		t.Error("Done did not receive the context Start returned")
	}
	return d.got[len(d.got)-1]
}

// TestObserverOutcomes drives each outcome of a delivery and checks the
// observation: outcome, status, the event's identity once it was read, an
// error for every failure, a duration, and no secret in the error.
func TestObserverOutcomes(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	var rec observed
	store := webhook.NewMemoryStore(webhook.MemoryOptions{Now: clk.Now})
	h := newHandler(t, webhook.Config{Now: clk.Now, Store: store, Observer: rec.observer(), MaxBodyBytes: 4096})
	var handlerCtx context.Context
	h.On(stripe.EventTypeInvoicePaid, func(ctx context.Context, ev *stripe.Event) error {
		handlerCtx = ctx
		if ev.ID == "evt_fails" {
			return errors.New("handler failed")
		}
		return nil
	})
	// A claim held by another delivery: in flight elsewhere.
	if _, err := store.Claim(context.Background(), "evt_busy", time.Minute); err != nil {
		t.Fatal(err)
	}
	signed := func(p []byte) *http.Request { return webhooktest.RequestAt(secret, p, clk.Now()) }
	cases := []struct {
		name    string
		req     func() *http.Request
		outcome webhook.Outcome
		status  int
		event   string // the event type observed; "" before the payload is read
	}{
		{"handled", func() *http.Request { return signed(invoice("evt_ok")) }, webhook.Handled, 200, "invoice.paid"},
		{"duplicate", func() *http.Request { return signed(invoice("evt_ok")) }, webhook.Duplicate, 200, "invoice.paid"},
		{"ignored", func() *http.Request {
			return signed(webhooktest.NewEvent("customer.created", map[string]any{"id": "cus_1", "object": "customer"}, webhooktest.WithID("evt_ign")))
		}, webhook.Ignored, 200, "customer.created"},
		{"in flight elsewhere", func() *http.Request { return signed(invoice("evt_busy")) }, webhook.InFlightElsewhere, 409, "invoice.paid"},
		{"handler failed", func() *http.Request { return signed(invoice("evt_fails")) }, webhook.HandlerFailed, 500, "invoice.paid"},
		{"bad signature", func() *http.Request { return webhooktest.RequestAt(oldSecret, invoice("evt_x"), clk.Now()) }, webhook.BadSignature, 400, ""},
		{"not signed", func() *http.Request {
			return httptest.NewRequest(http.MethodPost, "/webhook", strings.NewReader(string(invoice("evt_x"))))
		}, webhook.BadSignature, 400, ""},
		{"stale", func() *http.Request {
			return webhooktest.RequestAt(secret, invoice("evt_x"), clk.Now().Add(-time.Hour))
		}, webhook.Stale, 400, ""},
		{"malformed", func() *http.Request { return signed([]byte(`{"id": 1`)) }, webhook.Malformed, 400, ""},
		{"too large", func() *http.Request { return signed([]byte(`{"pad":"` + strings.Repeat("x", 5000) + `"}`)) }, webhook.TooLarge, 413, ""},
		{"too large, no Content-Length", func() *http.Request {
			r := signed([]byte(`{"pad":"` + strings.Repeat("x", 5000) + `"}`))
			r.ContentLength = -1 // read until the limit, as a chunked body is
			return r
		}, webhook.TooLarge, 413, ""},
		{"bad method", func() *http.Request { return httptest.NewRequest(http.MethodGet, "/webhook", nil) }, webhook.BadMethod, 405, ""},
	}
	for _, tc := range cases {
		w := serve(h, tc.req())
		d := rec.last(t)
		if d.Outcome != tc.outcome || d.Status != tc.status || w.Code != tc.status {
			t.Errorf("%s: observed %v/%d, answered %d; want %v/%d", tc.name, d.Outcome, d.Status, w.Code, tc.outcome, tc.status)
		}
		if d.EventType != tc.event {
			t.Errorf("%s: EventType %q, want %q", tc.name, d.EventType, tc.event)
		}
		if (d.EventType == "") != (d.EventID == "") {
			t.Errorf("%s: EventID %q with EventType %q", tc.name, d.EventID, d.EventType)
		}
		failed := tc.status != http.StatusOK
		if (d.Err != nil) != failed {
			t.Errorf("%s: Err = %v, want an error: %v", tc.name, d.Err, failed)
		}
		if d.Err != nil && strings.Contains(d.Err.Error(), "whsec_") {
			t.Errorf("%s: Err names a secret: %v", tc.name, d.Err)
		}
		if d.Duration <= 0 {
			t.Errorf("%s: Duration %v", tc.name, d.Duration)
		}
	}
	if handlerCtx == nil || handlerCtx.Value(ctxMark{}) != "started" {
		t.Error("handlers did not run under the context Start returned")
	}
}

// TestObserverStoreFailed checks the outcome of a store that cannot claim.
func TestObserverStoreFailed(t *testing.T) {
	t.Parallel()
	var rec observed
	h := newHandler(t, webhook.Config{Store: failingStore{}, Observer: rec.observer()})
	h.On(stripe.EventTypeInvoicePaid, func(context.Context, *stripe.Event) error { return nil })
	w := serve(h, webhooktest.Request(secret, invoice("evt_1")))
	if d := rec.last(t); d.Outcome != webhook.StoreFailed || d.Status != 503 || w.Code != 503 || d.Err == nil {
		t.Errorf("observed %+v, answered %d; want store_failed 503 with an error", d, w.Code)
	}
}

func TestOutcomeString(t *testing.T) {
	t.Parallel()
	want := map[webhook.Outcome]string{webhook.Handled: "handled", webhook.Duplicate: "duplicate", webhook.Ignored: "ignored",
		webhook.InFlightElsewhere: "in_flight", webhook.HandlerFailed: "handler_failed", webhook.StoreFailed: "store_failed",
		webhook.BadSignature: "bad_signature", webhook.Stale: "stale", webhook.Malformed: "malformed",
		webhook.TooLarge: "too_large", webhook.BadMethod: "bad_method", 0: "unknown", 99: "unknown"}
	for o, s := range want {
		if o.String() != s {
			t.Errorf("Outcome(%d).String() = %q, want %q", o, o.String(), s)
		}
	}
}
