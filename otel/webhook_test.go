package billkitotel_test

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/billkit/billkit/webhook"
	"github.com/billkit/billkit/webhook/webhooktest"
)

const secret = "whsec_test_otel"

// failingStore is a webhook.Store that cannot claim.
type failingStore struct{ webhook.Store }

func (failingStore) Claim(context.Context, string, time.Duration) (webhook.Claim, error) {
	return webhook.Claim{}, errors.New("store down")
}

func TestWebhookOutcomes(t *testing.T) {
	t.Parallel()
	tm := newTelemetry(t)
	store := webhook.NewMemoryStore(webhook.MemoryOptions{})
	h, err := webhook.New(webhook.Config{
		Secrets:  []string{secret},
		Store:    store,
		Observer: tm.Webhook(),
		Logger:   quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Another delivery of evt_busy_1 holds its claim: in flight elsewhere.
	if _, err := store.Claim(context.Background(), "evt_busy_1", time.Minute); err != nil {
		t.Fatal(err)
	}
	h.On(stripe.EventTypeInvoicePaid, func(context.Context, *stripe.Event) error { return nil })
	h.On(stripe.EventTypeCustomerSubscriptionDeleted, func(context.Context, *stripe.Event) error {
		return errors.New("database unavailable")
	})
	down, err := webhook.New(webhook.Config{
		Secrets:  []string{secret},
		Store:    failingStore{},
		Observer: tm.Webhook(),
		Logger:   quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	down.On(stripe.EventTypeInvoicePaid, func(context.Context, *stripe.Event) error { return nil })

	paid := webhooktest.NewEvent(stripe.EventTypeInvoicePaid,
		map[string]any{"id": "in_1", "object": "invoice", "customer": "cus_secret"}, webhooktest.WithID("evt_paid_1"))
	deleted := webhooktest.NewEvent(stripe.EventTypeCustomerSubscriptionDeleted,
		map[string]any{"id": "sub_1", "object": "subscription"}, webhooktest.WithID("evt_deleted_1"))
	created := webhooktest.NewEvent("customer.created",
		map[string]any{"id": "cus_1", "object": "customer"}, webhooktest.WithID("evt_created_1"))
	busy := webhooktest.NewEvent(stripe.EventTypeInvoicePaid,
		map[string]any{"id": "in_2", "object": "invoice"}, webhooktest.WithID("evt_busy_1"))
	get := httptest.NewRequest(http.MethodGet, "/webhook", nil)
	malformed := webhooktest.Request(secret, []byte("not json"))

	deliveries := []struct {
		h      http.Handler
		r      *http.Request
		status int
	}{
		{h, webhooktest.Request(secret, paid), 200},                               // handled
		{h, webhooktest.Request(secret, paid), 200},                               // duplicate
		{h, webhooktest.Request(secret, created), 200},                            // ignored
		{h, webhooktest.Request("whsec_other", paid), 400},                        // bad_signature
		{h, webhooktest.RequestAt(secret, paid, time.Now().Add(-time.Hour)), 400}, // stale
		{h, webhooktest.Request(secret, deleted), 500},                            // handler_failed
		{h, malformed, 400}, // malformed
		{h, get, 405},       // bad_method
		{down, webhooktest.Request(secret, paid), 503},                                                   // store_failed
		{h, httptest.NewRequest(http.MethodPost, "/webhook", bytes.NewReader(make([]byte, 2<<20))), 413}, // too_large
		{h, webhooktest.Request(secret, busy), 409},                                                      // in_flight
	}
	for i, d := range deliveries {
		rec := httptest.NewRecorder()
		d.h.ServeHTTP(rec, d.r)
		if rec.Code != d.status {
			t.Errorf("delivery %d: status %d, want %d", i, rec.Code, d.status)
		}
	}

	want := map[string]int64{
		"billkit.outcome=handled,http.response.status_code=200,stripe.event.type=invoice.paid":                         1,
		"billkit.outcome=duplicate,http.response.status_code=200,stripe.event.type=invoice.paid":                       1,
		"billkit.outcome=ignored,http.response.status_code=200,stripe.event.type=customer.created":                     1,
		"billkit.outcome=bad_signature,http.response.status_code=400":                                                  1,
		"billkit.outcome=stale,http.response.status_code=400":                                                          1,
		"billkit.outcome=handler_failed,http.response.status_code=500,stripe.event.type=customer.subscription.deleted": 1,
		"billkit.outcome=malformed,http.response.status_code=400":                                                      1,
		"billkit.outcome=bad_method,http.response.status_code=405":                                                     1,
		"billkit.outcome=store_failed,http.response.status_code=503,stripe.event.type=invoice.paid":                    1,
		"billkit.outcome=too_large,http.response.status_code=413":                                                      1,
		"billkit.outcome=in_flight,http.response.status_code=409,stripe.event.type=invoice.paid":                       1,
	}
	checkSums(t, tm, "billkit.webhook.deliveries", want)
	wantDur := map[string]uint64{}
	for k := range want {
		k = strings.Replace(k, ",http.response.status_code="+statusOf(k), "", 1)
		wantDur[k]++
	}
	checkCounts(t, tm, "billkit.webhook.delivery.duration", wantDur)
	tm.assertNowhere(t, false, "evt_", "cus_secret", "sub_1", "in_1")

	spans := tm.spans.Ended()
	if len(spans) != len(deliveries) {
		t.Fatalf("%d spans, want %d", len(spans), len(deliveries))
	}
	type spanWant struct {
		name   string
		status codes.Code
		attrs  map[string]string
		errors int // exception events
	}
	wantSpans := []spanWant{
		{"stripe webhook invoice.paid", codes.Unset, map[string]string{"billkit.outcome": "handled", "http.response.status_code": "200",
			"stripe.event.id": "evt_paid_1", "stripe.event.type": "invoice.paid", "stripe.api_version": stripe.APIVersion}, 0},
		{"stripe webhook invoice.paid", codes.Unset, map[string]string{"billkit.outcome": "duplicate", "http.response.status_code": "200",
			"stripe.event.id": "evt_paid_1", "stripe.event.type": "invoice.paid", "stripe.api_version": stripe.APIVersion}, 0},
		{"stripe webhook customer.created", codes.Unset, map[string]string{"billkit.outcome": "ignored", "http.response.status_code": "200",
			"stripe.event.id": "evt_created_1", "stripe.event.type": "customer.created", "stripe.api_version": stripe.APIVersion}, 0},
		{"stripe webhook", codes.Error, map[string]string{"billkit.outcome": "bad_signature", "http.response.status_code": "400"}, 1},
		{"stripe webhook", codes.Error, map[string]string{"billkit.outcome": "stale", "http.response.status_code": "400"}, 1},
		{"stripe webhook customer.subscription.deleted", codes.Error, map[string]string{"billkit.outcome": "handler_failed",
			"http.response.status_code": "500", "stripe.event.id": "evt_deleted_1",
			"stripe.event.type": "customer.subscription.deleted", "stripe.api_version": stripe.APIVersion}, 1},
		{"stripe webhook", codes.Error, map[string]string{"billkit.outcome": "malformed", "http.response.status_code": "400"}, 1},
		{"stripe webhook", codes.Error, map[string]string{"billkit.outcome": "bad_method", "http.response.status_code": "405"}, 1},
		{"stripe webhook invoice.paid", codes.Error, map[string]string{"billkit.outcome": "store_failed", "http.response.status_code": "503",
			"stripe.event.id": "evt_paid_1", "stripe.event.type": "invoice.paid", "stripe.api_version": stripe.APIVersion}, 1},
		{"stripe webhook", codes.Error, map[string]string{"billkit.outcome": "too_large", "http.response.status_code": "413"}, 1},
		{"stripe webhook invoice.paid", codes.Unset, map[string]string{"billkit.outcome": "in_flight", "http.response.status_code": "409",
			"stripe.event.id": "evt_busy_1", "stripe.event.type": "invoice.paid", "stripe.api_version": stripe.APIVersion}, 0},
	}
	for i, s := range spans {
		w := wantSpans[i]
		if s.Name() != w.name || s.Status().Code != w.status || s.SpanKind() != trace.SpanKindInternal {
			t.Errorf("span %d: %q %v %v, want %q %v internal", i, s.Name(), s.Status().Code, s.SpanKind(), w.name, w.status)
		}
		if got := spanAttrs(s.Attributes()); !maps.Equal(got, w.attrs) {
			t.Errorf("span %d attributes %v, want %v", i, got, w.attrs)
		}
		if got := exceptions(s); got != w.errors {
			t.Errorf("span %d: %d exception events, want %d", i, got, w.errors)
		}
	}
}

// statusOf returns the status code in an encoded attribute set.
func statusOf(k string) string {
	_, after, _ := strings.Cut(k, "http.response.status_code=")
	status, _, _ := strings.Cut(after, ",")
	return status
}

// exceptions counts the exception events (RecordError) of s.
func exceptions(s sdktrace.ReadOnlySpan) int {
	n := 0
	for _, e := range s.Events() {
		if e.Name == "exception" {
			n++
		}
	}
	return n
}

// TestWebhookSpanParentsStripeCall checks that a Stripe call a handler
// makes through a wrapped backend is a child of the delivery's span, in
// the same trace.
func TestWebhookSpanParentsStripeCall(t *testing.T) {
	t.Parallel()
	tm := newTelemetry(t)
	var gotPath atomic.Value
	fake := newFakeStripe(t, func(w http.ResponseWriter, r *http.Request) {
		gotPath.Store(r.URL.Path)
		writeJSON(w, 200, map[string]any{"id": "cus_NffrFeUfNV2Hib", "object": "customer"})
	})
	api := fake.client(tm)
	h, err := webhook.New(webhook.Config{
		Secrets:  []string{secret},
		Store:    webhook.NewMemoryStore(webhook.MemoryOptions{}),
		Observer: tm.Webhook(),
		Logger:   quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.On(stripe.EventTypeInvoicePaid, func(ctx context.Context, ev *stripe.Event) error {
		_, err := api.Customers.Get("cus_NffrFeUfNV2Hib", &stripe.CustomerParams{Params: stripe.Params{Context: ctx}})
		return err
	})
	statuses := webhooktest.Deliver(t, h, secret, webhooktest.NewEvent(stripe.EventTypeInvoicePaid,
		map[string]any{"id": "in_1", "object": "invoice", "customer": "cus_NffrFeUfNV2Hib"}))
	if statuses[0] != 200 || gotPath.Load() != "/v1/customers/cus_NffrFeUfNV2Hib" {
		t.Fatalf("status %d, Stripe called at %q", statuses[0], gotPath.Load())
	}

	spans := tm.spans.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want 2", len(spans))
	}
	call, delivery := spans[0], spans[1] // a child ends first
	if call.Name() != "stripe GET /v1/customers/{id}" || call.SpanKind() != trace.SpanKindClient {
		t.Errorf("call span %q %v, want \"stripe GET /v1/customers/{id}\" client", call.Name(), call.SpanKind())
	}
	if delivery.Name() != "stripe webhook invoice.paid" {
		t.Errorf("delivery span %q", delivery.Name())
	}
	if call.Parent().SpanID() != delivery.SpanContext().SpanID() || call.SpanContext().TraceID() != delivery.SpanContext().TraceID() {
		t.Errorf("call span's parent %v in trace %v, want the delivery's span %v in trace %v",
			call.Parent().SpanID(), call.SpanContext().TraceID(), delivery.SpanContext().SpanID(), delivery.SpanContext().TraceID())
	}
	want := map[string]string{
		"http.request.method": "GET", "url.template": "/v1/customers/{id}",
		"http.response.status_code": "200", "stripe.request_id": "req_fake123",
	}
	if got := spanAttrs(call.Attributes()); !maps.Equal(got, want) {
		t.Errorf("call span attributes %v, want %v", got, want)
	}
	checkSums(t, tm, "billkit.stripe.requests", map[string]int64{
		"http.request.method=GET,http.response.status_code=200,url.template=/v1/customers/{id}": 1,
	})
	tm.assertNowhere(t, false, "cus_NffrFeUfNV2Hib")
}
