package billing

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/stripe/stripe-go/v76"
)

// Report is what [Lifecycle.Reconcile] found and did.
type Report struct {
	// Listed is the number of subscriptions Stripe listed.
	Listed int
	// Changes are the entitlements that had drifted and were repaired.
	Changes []Change
	// Unmapped are the IDs of listed subscriptions that map to no subject
	// (no billkit_subject metadata and an unknown customer).
	Unmapped []string
	// Missing are the subjects whose live entitlement names a subscription
	// Stripe did not list. They are reported, not changed.
	Missing []string
}

// Change is one repaired entitlement.
type Change struct {
	// Subject is the subject whose entitlement was repaired.
	Subject string
	// SubscriptionID is the Stripe subscription it was repaired from.
	SubscriptionID string
	// Before and After are the entitlement before and after the repair.
	Before, After Entitlement
	// Fields names the derived fields that changed, such as "status" or
	// "tier".
	Fields []string
}

// Reconcile repairs entitlements that drifted because webhook events were
// missed: it lists every subscription from Stripe (status "all", with
// auto-pagination) and applies each as a snapshot, exactly as an event
// carrying it would be, stamped with the time the listing began less one
// second, so that events created after the listing began still win. It then
// reports live entitlements whose subscription was not listed.
//
// It needs Config.Stripe. It is safe to run concurrently with event
// handling and with itself; run it periodically (for example hourly) and
// after an outage of the webhook endpoint.
func (l *Lifecycle) Reconcile(ctx context.Context) (Report, error) {
	var rep Report
	if l.cfg.Stripe == nil {
		return rep, fmt.Errorf("%w: Reconcile needs Stripe", ErrInvalidConfig)
	}
	log := l.cfg.Logger.With("op", "reconcile")
	start := l.cfg.Now().UTC().Truncate(time.Second).Add(-time.Second)
	params := &stripe.SubscriptionListParams{Status: stripe.String("all")}
	params.Context = ctx
	params.Limit = stripe.Int64(100)
	seen := map[string]bool{}
	it := l.cfg.Stripe.Subscriptions.List(params)
	for it.Next() {
		sub := it.Subscription()
		if sub == nil || sub.ID == "" {
			continue
		}
		rep.Listed++
		seen[sub.ID] = true
		subject, err := l.subjectOf(ctx, sub.Metadata, customerID(sub.Customer))
		if err != nil {
			return rep, err
		}
		if subject == "" {
			rep.Unmapped = append(rep.Unmapped, sub.ID)
			continue
		}
		f := l.snapshot(ctx, log, sub, start, "")
		before, after, err := l.apply(ctx, log, subject, func(e *Entitlement) { mergeSubscription(e, f) })
		if err != nil {
			return rep, err
		}
		if fields := changedFields(before, after); len(fields) > 0 {
			rep.Changes = append(rep.Changes, Change{Subject: subject, SubscriptionID: sub.ID, Before: before, After: after, Fields: fields})
			log.InfoContext(ctx, "billing: reconcile repaired an entitlement", slog.String("subject", subject),
				slog.String("subscription", sub.ID), slog.Any("fields", fields))
		}
	}
	if err := it.Err(); err != nil {
		return rep, fmt.Errorf("billing: list subscriptions: %w", err)
	}
	err := l.cfg.Store.ForEach(ctx, func(e Entitlement) error {
		if e.SubscriptionID != "" && !e.Status.Terminal() && e.Status != StatusNone && !seen[e.SubscriptionID] {
			rep.Missing = append(rep.Missing, e.Subject)
		}
		return nil
	})
	slices.Sort(rep.Missing)
	if err != nil {
		return rep, fmt.Errorf("billing: reconcile: %w", err)
	}
	return rep, nil
}

// changedFields names the derived fields that differ between a and b.
func changedFields(a, b Entitlement) []string {
	var f []string
	add := func(name string, changed bool) {
		if changed {
			f = append(f, name)
		}
	}
	add("status", a.Status != b.Status)
	add("tier", a.Tier != b.Tier)
	add("customer_id", a.CustomerID != b.CustomerID)
	add("subscription_id", a.SubscriptionID != b.SubscriptionID)
	add("metered_item_id", a.MeteredItemID != b.MeteredItemID)
	add("period", a.Period != b.Period)
	add("previous_period", a.PreviousPeriod != b.PreviousPeriod)
	add("previous_tier", a.PreviousTier != b.PreviousTier)
	add("grace_until", !a.GraceUntil.Equal(b.GraceUntil))
	add("grace_tier", a.GraceTier != b.GraceTier)
	return f
}
