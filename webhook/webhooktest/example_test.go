package webhooktest_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/stripe/stripe-go/v76"
	stripewebhook "github.com/stripe/stripe-go/v76/webhook"

	"github.com/billkit/billkit/webhook"
	"github.com/billkit/billkit/webhook/webhooktest"
)

// NewEvent builds the JSON Stripe would deliver for an object.
func ExampleNewEvent() {
	payload := webhooktest.NewEvent(stripe.EventTypeCustomerSubscriptionCreated,
		map[string]any{"id": "sub_123", "object": "subscription", "status": "active"},
		webhooktest.WithID("evt_123"),
		webhooktest.WithCreated(time.Unix(1767225600, 0)),
	)
	fmt.Println(strings.Replace(string(payload), stripe.APIVersion, "API_VERSION", 1))
	// Output:
	// {"id":"evt_123","object":"event","api_version":"API_VERSION","created":1767225600,"data":{"object":{"id":"sub_123","object":"subscription","status":"active"}},"livemode":false,"pending_webhooks":1,"request":{"id":null,"idempotency_key":null},"type":"customer.subscription.created"}
}

// Sign computes the Stripe-Signature header, which stripe-go's verification
// accepts.
func ExampleSign() {
	payload := []byte(`{"id":"evt_123","object":"event"}`)
	header := webhooktest.Sign("whsec_example", payload, time.Unix(1767225600, 0))
	fmt.Println(header)
	fmt.Println(stripewebhook.ValidatePayloadIgnoringTolerance(payload, header, "whsec_example"))
	// Output:
	// t=1767225600,v1=e6653fe3e8383755f2e64b1b6f9e475e557a58309d1972af6b68ef963e9fa893
	// <nil>
}

// A Deliverer sends each event several times, concurrently and in a
// shuffled order, as Stripe may; the handler still runs once per event.
func ExampleDeliverer() {
	const secret = "whsec_example"
	h, _ := webhook.New(webhook.Config{Secrets: []string{secret}, Store: webhook.NewMemoryStore(webhook.MemoryOptions{})})
	var runs atomic.Int64
	h.OnAny(func(context.Context, *stripe.Event) error { runs.Add(1); return nil })

	events := [][]byte{
		webhooktest.NewEvent(stripe.EventTypeInvoicePaid, map[string]any{"id": "in_1", "object": "invoice"}),
		webhooktest.NewEvent(stripe.EventTypeInvoicePaid, map[string]any{"id": "in_2", "object": "invoice"}),
		webhooktest.NewEvent(stripe.EventTypeInvoicePaid, map[string]any{"id": "in_3", "object": "invoice"}),
	}
	d := webhooktest.Deliverer{Secret: secret, Copies: 4, Shuffle: true, Seed: 1}
	res := d.Deliver(nil, h, events...)
	fmt.Println(len(res), "deliveries,", res.Count(http.StatusOK), "acknowledged,", runs.Load(), "handler runs")
	// Output:
	// 12 deliveries, 12 acknowledged, 3 handler runs
}

// Deliver is the short form: each event once, in order.
func ExampleDeliver() {
	const secret = "whsec_example"
	h, _ := webhook.New(webhook.Config{Secrets: []string{secret}, Store: webhook.NewMemoryStore(webhook.MemoryOptions{})})
	h.On(stripe.EventTypeInvoicePaymentFailed, func(context.Context, *stripe.Event) error {
		return fmt.Errorf("card declined handling failed")
	})
	statuses := webhooktest.Deliver(nil, h, secret,
		webhooktest.NewEvent(stripe.EventTypeInvoicePaid, map[string]any{"id": "in_1", "object": "invoice"}),
		webhooktest.NewEvent(stripe.EventTypeInvoicePaymentFailed, map[string]any{"id": "in_2", "object": "invoice"}),
	)
	fmt.Println(statuses)
	// Output:
	// [200 500]
}

// ContextWithToken gives a handler that marks events done in its own
// transaction, and so reads webhook.TokenFromContext, a claim token when a
// test calls it directly rather than through a webhook.Handler.
func ExampleContextWithToken() {
	markDone := func(ctx context.Context, ev *stripe.Event) error {
		token, ok := webhook.TokenFromContext(ctx)
		if !ok {
			return fmt.Errorf("%s: not run under a claim", ev.ID)
		}
		fmt.Println("UPDATE stripe_events SET state = 'done' WHERE event_id =", ev.ID, "AND token =", token)
		return nil
	}
	ev := &stripe.Event{ID: "evt_123", Type: stripe.EventTypeInvoicePaid}
	fmt.Println(markDone(context.Background(), ev))
	fmt.Println(markDone(webhooktest.ContextWithToken(context.Background(), "tok_1"), ev))
	// Output:
	// evt_123: not run under a claim
	// UPDATE stripe_events SET state = 'done' WHERE event_id = evt_123 AND token = tok_1
	// <nil>
}
