// Package webhooktest helps test code that receives Stripe webhooks through
// [github.com/billkit/billkit/webhook]: it builds Stripe-shaped events
// ([NewEvent]), signs them as Stripe does ([Sign], [Request]), delivers
// them to an [net/http.Handler] with duplicates, concurrency and a seeded
// shuffled order ([Deliverer], [Deliver]), and checks a
// [github.com/billkit/billkit/webhook.Store] implementation against the
// conformance suite ([TestStore]).
//
//	const secret = "whsec_test"
//	h, _ := webhook.New(webhook.Config{Secrets: []string{secret}, Store: webhook.NewMemoryStore(webhook.MemoryOptions{})})
//	h.On(stripe.EventTypeInvoicePaid, markPaid)
//	ev := webhooktest.NewEvent(stripe.EventTypeInvoicePaid, map[string]any{"id": "in_123", "object": "invoice"})
//	res := webhooktest.Deliverer{Secret: secret, Copies: 5, Concurrency: 5}.Deliver(t, h, ev)
//	// markPaid ran once; each delivery got 200 (handled or duplicate) or
//	// 409 (another copy held the lease at that moment).
//
// Signatures are computed by stripe-go's
// [github.com/stripe/stripe-go/v76/webhook.GenerateTestSignedPayload], so
// they are exactly what the verifying side expects.
package webhooktest
