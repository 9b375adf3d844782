// Package demo holds what the sample server and its send-event command
// share: the demo plans' price IDs, and Stripe-shaped objects (Checkout
// Session, subscription, invoice) for the events of a subscription's
// lifecycle, shaped as the billing package's lifecycle handlers read them.
package demo

import (
	"fmt"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/billkit/billkit/checkout"
)

// Price IDs of the demo plans, used when no PRICE_* variable is set. They
// are well-formed but exist in no Stripe account.
const (
	PriceStarter    = "price_1DemoStarter0000000000"
	PricePro        = "price_1DemoPro00000000000000"
	PriceProMetered = "price_1DemoProMetered000000"
)

// Metadata keys that link Stripe objects to a subject: the keys checkout
// writes and billing reads.
const (
	MetadataSubject = checkout.MetadataSubject
	MetadataTier    = checkout.MetadataTier
)

// Kinds of events that [Event] builds, in lifecycle order.
const (
	CheckoutCompleted   = "checkout-completed"
	SubscriptionCreated = "subscription-created"
	SubscriptionUpdated = "subscription-updated"
	InvoiceCreated      = "invoice-created"
	PaymentFailed       = "payment-failed"
	InvoicePaid         = "invoice-paid"
	SubscriptionDeleted = "subscription-deleted"
)

// Kinds returns every kind of event [Event] builds, in lifecycle order.
func Kinds() []string {
	return []string{CheckoutCompleted, SubscriptionCreated, SubscriptionUpdated, InvoiceCreated, PaymentFailed, InvoicePaid, SubscriptionDeleted}
}

// Subscription describes the subscription the events are about.
type Subscription struct {
	// Subject is the subscriber's subject (the server's API-key subject).
	Subject string
	// Customer is the Stripe customer ID; the default is derived from
	// Subject.
	Customer string
	// ID is the subscription ID; the default is derived from Subject.
	ID string
	// Tier is the plan's tier, such as "pro".
	Tier string
	// PriceID is the tier's licensed price; MeteredPriceID its optional
	// metered price.
	PriceID, MeteredPriceID string
	// Status is the subscription's status in subscription-created and
	// subscription-updated events; the default is "active".
	Status stripe.SubscriptionStatus
	// PeriodStart and PeriodEnd bound the current billing period; the
	// default is the calendar month (UTC) of the event's time.
	PeriodStart, PeriodEnd time.Time
}

// idPart turns a subject into characters safe inside an object ID.
func idPart(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '_'
	}, s)
}

// WithDefaults returns s with the defaults [Event] applies filled in: the
// customer and subscription IDs, the status and the billing period of an
// event at now.
func (s Subscription) WithDefaults(now time.Time) Subscription {
	if s.Customer == "" {
		s.Customer = "cus_demo_" + idPart(s.Subject)
	}
	if s.ID == "" {
		s.ID = "sub_demo_" + idPart(s.Subject)
	}
	if s.Status == "" {
		s.Status = stripe.SubscriptionStatusActive
	}
	if s.PeriodStart.IsZero() || !s.PeriodEnd.After(s.PeriodStart) {
		t := now.UTC()
		s.PeriodStart = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		s.PeriodEnd = s.PeriodStart.AddDate(0, 1, 0)
	}
	return s
}

// ItemID returns the ID of the subscription item of price kind "base" or
// "metered".
func (s Subscription) ItemID(kind string) string {
	return "si_demo_" + idPart(s.Subject) + "_" + kind
}

// Event returns the Stripe event type and the data.object of an event of
// kind (one of [Kinds]) about s, at time now.
func Event(kind string, s Subscription, now time.Time) (stripe.EventType, map[string]any, error) {
	if s.Subject == "" {
		return "", nil, fmt.Errorf("demo: no subject")
	}
	s = s.WithDefaults(now)
	switch kind {
	case CheckoutCompleted:
		return stripe.EventTypeCheckoutSessionCompleted, s.checkoutSession(now), nil
	case SubscriptionCreated:
		return stripe.EventTypeCustomerSubscriptionCreated, s.subscription(now), nil
	case SubscriptionUpdated:
		return stripe.EventTypeCustomerSubscriptionUpdated, s.subscription(now), nil
	case SubscriptionDeleted:
		s.Status = stripe.SubscriptionStatusCanceled
		obj := s.subscription(now)
		obj["canceled_at"] = now.Unix()
		obj["ended_at"] = now.Unix()
		return stripe.EventTypeCustomerSubscriptionDeleted, obj, nil
	case InvoiceCreated:
		return stripe.EventTypeInvoiceCreated, s.invoice(now, "draft"), nil
	case PaymentFailed:
		return stripe.EventTypeInvoicePaymentFailed, s.invoice(now, "open"), nil
	case InvoicePaid:
		return stripe.EventTypeInvoicePaid, s.invoice(now, "paid"), nil
	}
	return "", nil, fmt.Errorf("demo: unknown event %q (want one of %s)", kind, strings.Join(Kinds(), ", "))
}

func (s Subscription) metadata() map[string]string {
	m := map[string]string{MetadataSubject: s.Subject}
	if s.Tier != "" {
		m[MetadataTier] = s.Tier
	}
	return m
}

func (s Subscription) checkoutSession(now time.Time) map[string]any {
	return map[string]any{
		"id":                  "cs_test_demo_" + idPart(s.Subject) + "_" + fmt.Sprint(now.Unix()),
		"object":              "checkout.session",
		"mode":                "subscription",
		"status":              "complete",
		"payment_status":      "paid",
		"client_reference_id": s.Subject,
		"customer":            s.Customer,
		"subscription":        s.ID,
		"created":             now.Unix(),
		"livemode":            false,
		"metadata":            s.metadata(),
	}
}

func (s Subscription) subscription(now time.Time) map[string]any {
	items := []map[string]any{{
		"id":           s.ItemID("base"),
		"object":       "subscription_item",
		"subscription": s.ID,
		"quantity":     1,
		"price":        price(s.PriceID, "licensed"),
	}}
	if s.MeteredPriceID != "" {
		items = append(items, map[string]any{
			"id":           s.ItemID("metered"),
			"object":       "subscription_item",
			"subscription": s.ID,
			"price":        price(s.MeteredPriceID, "metered"),
		})
	}
	return map[string]any{
		"id":                   s.ID,
		"object":               "subscription",
		"customer":             s.Customer,
		"status":               string(s.Status),
		"created":              s.PeriodStart.Unix(),
		"start_date":           s.PeriodStart.Unix(),
		"current_period_start": s.PeriodStart.Unix(),
		"current_period_end":   s.PeriodEnd.Unix(),
		"cancel_at_period_end": false,
		"livemode":             false,
		"metadata":             s.metadata(),
		"items": map[string]any{
			"object":   "list",
			"data":     items,
			"has_more": false,
			"url":      "/v1/subscription_items?subscription=" + s.ID,
		},
	}
}

func price(id, usage string) map[string]any {
	return map[string]any{
		"id":        id,
		"object":    "price",
		"active":    true,
		"currency":  "usd",
		"type":      "recurring",
		"recurring": map[string]any{"interval": "month", "interval_count": 1, "usage_type": usage},
	}
}

// invoice returns the subscription's invoice of its current period, in
// status ("draft", "open" after a failed payment, or "paid").
func (s Subscription) invoice(now time.Time, status string) map[string]any {
	line := func(id, priceID, usage string) map[string]any {
		return map[string]any{
			"id":     id,
			"object": "line_item",
			"type":   "subscription",
			"price":  price(priceID, usage),
			"period": map[string]any{"start": s.PeriodStart.Unix(), "end": s.PeriodEnd.Unix()},
		}
	}
	id := "in_demo_" + idPart(s.Subject) + "_" + s.PeriodStart.UTC().Format("20060102")
	lines := []map[string]any{line("il_"+id[3:]+"_base", s.PriceID, "licensed")}
	if s.MeteredPriceID != "" {
		lines = append(lines, line("il_"+id[3:]+"_metered", s.MeteredPriceID, "metered"))
	}
	transitions := map[string]any{}
	if status != "draft" {
		transitions["finalized_at"] = now.Unix()
	}
	if status == "paid" {
		transitions["paid_at"] = now.Unix()
	}
	return map[string]any{
		"id":                   id,
		"object":               "invoice",
		"customer":             s.Customer,
		"subscription":         s.ID,
		"status":               status,
		"paid":                 status == "paid",
		"billing_reason":       "subscription_cycle",
		"currency":             "usd",
		"created":              now.Unix(),
		"period_start":         s.PeriodStart.Unix(),
		"period_end":           s.PeriodEnd.Unix(),
		"livemode":             false,
		"status_transitions":   transitions,
		"subscription_details": map[string]any{"metadata": s.metadata()},
		"lines":                map[string]any{"object": "list", "data": lines, "has_more": false},
	}
}
