package webhook_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stripe/stripe-go/v76"

	"github.com/billkit/billkit/webhook"
	"github.com/billkit/billkit/webhook/webhooktest"
)

// A Handler verifies, deduplicates and dispatches Stripe events. Here a
// signed invoice.paid event is delivered twice: the handler runs once and
// both deliveries are acknowledged.
func Example() {
	const secret = "whsec_example"
	h, err := webhook.New(webhook.Config{
		Secrets: []string{secret},
		Store:   webhook.NewMemoryStore(webhook.MemoryOptions{}), // a RedisStore when several processes serve
	})
	if err != nil {
		panic(err)
	}
	h.On(stripe.EventTypeInvoicePaid, func(ctx context.Context, ev *stripe.Event) error {
		var inv stripe.Invoice
		if err := json.Unmarshal(ev.Data.Raw, &inv); err != nil {
			return err
		}
		fmt.Printf("invoice %s paid: %d %s\n", inv.ID, inv.AmountPaid, inv.Currency)
		return nil
	})

	payload := webhooktest.NewEvent(stripe.EventTypeInvoicePaid,
		map[string]any{"id": "in_123", "object": "invoice", "amount_paid": 2000, "currency": "eur"},
		webhooktest.WithID("evt_123"))
	for range 2 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, webhooktest.Request(secret, payload))
		fmt.Println(rec.Code, strings.TrimSpace(rec.Body.String()))
	}
	// Output:
	// invoice in_123 paid: 2000 eur
	// 200 {"received":true,"result":"handled"}
	// 200 {"received":true,"result":"duplicate"}
}

// A handler that fails leaves the event retryable: Stripe's next delivery
// runs it again.
func ExampleHandler_On() {
	const secret = "whsec_example"
	h, _ := webhook.New(webhook.Config{Secrets: []string{secret}, Store: webhook.NewMemoryStore(webhook.MemoryOptions{})})
	attempts := 0
	h.On(stripe.EventTypeCustomerSubscriptionDeleted, func(ctx context.Context, ev *stripe.Event) error {
		attempts++
		if attempts == 1 {
			return fmt.Errorf("database unavailable")
		}
		fmt.Println("revoked access for", ev.Data.Object["customer"])
		return nil
	})
	payload := webhooktest.NewEvent(stripe.EventTypeCustomerSubscriptionDeleted,
		map[string]any{"id": "sub_123", "object": "subscription", "customer": "cus_123"})
	for range 3 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, webhooktest.Request(secret, payload))
		fmt.Println(rec.Code)
	}
	// Output:
	// 500
	// revoked access for cus_123
	// 200
	// 200
}

// Events of a handled type that are not meant for this application (here:
// a subscription of another product on the same Stripe account) are
// acknowledged by returning nil without acting.
func ExampleHandler_On_notForThisApplication() {
	const secret = "whsec_example"
	h, _ := webhook.New(webhook.Config{Secrets: []string{secret}, Store: webhook.NewMemoryStore(webhook.MemoryOptions{})})
	h.On(stripe.EventTypeCustomerSubscriptionCreated, func(ctx context.Context, ev *stripe.Event) error {
		var sub stripe.Subscription
		if err := json.Unmarshal(ev.Data.Raw, &sub); err != nil {
			return err
		}
		if sub.Metadata["app"] != "acme-api" {
			return nil // another product's subscription: acknowledged, ignored
		}
		fmt.Println("provisioned", sub.ID)
		return nil
	})
	for _, sub := range []map[string]any{
		{"id": "sub_ours", "object": "subscription", "metadata": map[string]string{"app": "acme-api"}},
		{"id": "sub_other", "object": "subscription", "metadata": map[string]string{"app": "newsletter"}},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, webhooktest.Request(secret, webhooktest.NewEvent(stripe.EventTypeCustomerSubscriptionCreated, sub)))
		fmt.Println(rec.Code)
	}
	// Output:
	// provisioned sub_ours
	// 200
	// 200
}

// OnAny handlers run for every event, after the type's own handlers; events
// of a type nobody handles are still acknowledged.
func ExampleHandler_OnAny() {
	const secret = "whsec_example"
	h, _ := webhook.New(webhook.Config{Secrets: []string{secret}, Store: webhook.NewMemoryStore(webhook.MemoryOptions{})})
	h.OnAny(func(ctx context.Context, ev *stripe.Event) error {
		fmt.Println("audit:", ev.Type, ev.APIVersion)
		return nil
	})
	payload := webhooktest.NewEvent("customer.created",
		map[string]any{"id": "cus_123", "object": "customer"},
		webhooktest.WithAPIVersion("2024-06-20")) // another version: accepted by default
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, webhooktest.Request(secret, payload))
	fmt.Println(rec.Code)
	// Output:
	// audit: customer.created 2024-06-20
	// 200
}

// A RedisStore keeps one key per event, with an expiry: the lease while a
// delivery runs the handlers, the retention once done.
func ExampleNewRedisStore() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	store, err := webhook.NewRedisStore(rdb, webhook.RedisOptions{}) // prefix "billkit"
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	claim, _ := store.Claim(ctx, "evt_123", time.Minute)
	key := mr.Keys()[0]
	fmt.Println(claim.Status, key, mr.TTL(key))
	again, _ := store.Claim(ctx, "evt_123", time.Minute)
	fmt.Println(again.Status)
	_ = store.Complete(ctx, "evt_123", claim.Token, webhook.DefaultRetention)
	done, _ := store.Claim(ctx, "evt_123", time.Minute)
	fmt.Println(done.Status, mr.TTL(key))
	// Output:
	// claimed billkit:wh:{evt_123} 1m0s
	// in_flight
	// done 168h0m0s
}

// A MemoryStore's leases and records expire on its clock.
func ExampleNewMemoryStore() {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	store := webhook.NewMemoryStore(webhook.MemoryOptions{Now: func() time.Time { return now }})
	ctx := context.Background()

	store.Claim(ctx, "evt_123", time.Minute) // the holder crashes
	c, _ := store.Claim(ctx, "evt_123", time.Minute)
	fmt.Println(c.Status)
	now = now.Add(time.Minute)
	c, _ = store.Claim(ctx, "evt_123", time.Minute)
	fmt.Println(c.Status)
	// Output:
	// in_flight
	// claimed
}
