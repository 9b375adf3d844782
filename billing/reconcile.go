package billing

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/stripe/stripe-go/v76"
)

// ReconcileReport is what [Lifecycle.Reconcile] found and did.
type ReconcileReport struct {
	// Listed is the number of subscriptions Stripe listed.
	Listed int
	// Repaired are the subjects whose entitlement had drifted and was
	// repaired; each repair is logged with the fields it changed.
	Repaired []string
	// Unmapped are the IDs of listed subscriptions that map to no subject
	// (no billkit_subject metadata and an unknown customer).
	Unmapped []string
	// Missing are the subjects whose live entitlement names a subscription
	// Stripe did not list. They are reported, not changed.
	Missing []string
	// Unreadable are the IDs of listed subscriptions of billkit's that
	// lack a configured plan's price, a period or a status; they are
	// logged at ERROR and not applied.
	Unreadable []string
	// Unparked is the number of customers whose parked events were
	// applied because the customer was linked to a subject since.
	Unparked int
	// Dropped are the IDs of parked events dropped because their customer
	// stayed linked to no subject for Config.ParkFor; each was logged at
	// ERROR and passed to Config.OnEventError.
	Dropped []string
}

// Reconcile repairs entitlements that drifted because webhook events were
// missed: it lists every subscription from Stripe (status "all", with
// auto-pagination) and applies each as a snapshot, exactly as an event
// carrying it would be, stamped with the time the listing began less one
// second, so that events created after the listing began still win. It
// reads each subscription from the JSON Stripe sent, in any API version,
// so that a reconciled period and a later event of another version's shape
// agree. It then reports live entitlements whose subscription was not
// listed, applies events parked for customers linked since, and drops
// (reporting them as [ErrUnmapped]) those parked longer than
// Config.ParkFor.
//
// It needs Config.Stripe. It is safe to run concurrently with event
// handling and with itself; [Lifecycle.Run] runs it periodically, and it
// is worth running after an outage of the webhook endpoint.
func (l *Lifecycle) Reconcile(ctx context.Context) (ReconcileReport, error) {
	obs := l.cfg.Observer.Reconciled
	if obs == nil {
		return l.reconcile(ctx)
	}
	start := time.Now()
	rep, err := l.reconcile(ctx)
	obs(ctx, ReconcileObservation{Report: rep, Duration: time.Since(start), Err: err})
	return rep, err
}

func (l *Lifecycle) reconcile(ctx context.Context) (ReconcileReport, error) {
	var rep ReconcileReport
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
	var page *stripe.SubscriptionList
	var raws map[string]json.RawMessage
	for it.Next() {
		sub := it.Subscription()
		if sub == nil || sub.ID == "" {
			continue
		}
		if pl := it.SubscriptionList(); pl != page {
			page, raws = pl, pageObjects(pl)
		}
		raw, ok := raws[sub.ID]
		if !ok {
			b, err := rawJSON(sub, nil)
			if err != nil {
				return rep, err
			}
			raw = b
		}
		v, err := readSubscription(raw)
		if err != nil {
			log.ErrorContext(ctx, "billing: reconcile: unreadable subscription", "subscription", sub.ID, "err", err)
			rep.Unreadable = append(rep.Unreadable, sub.ID)
			continue
		}
		rep.Listed++
		seen[v.ID] = true
		subject, err := l.subjectOf(ctx, v.Metadata, v.CustomerID)
		if err != nil {
			return rep, err
		}
		if subject == "" {
			rep.Unmapped = append(rep.Unmapped, v.ID)
			continue
		}
		f := l.snapshot(v, start, "")
		if f.Tier == "" || f.Period.IsZero() || f.Status == "" {
			if follows, err := l.follows(ctx, subject, v.ID, v.Metadata); err != nil {
				return rep, err
			} else if follows {
				log.ErrorContext(ctx, "billing: reconcile: subscription lacks a configured plan's price, a period or a status",
					"subscription", v.ID)
				rep.Unreadable = append(rep.Unreadable, v.ID)
			}
			continue
		}
		before, after, err := l.apply(ctx, log, subject, func(e *Entitlement) { mergeSubscription(e, f) })
		if err != nil {
			return rep, err
		}
		if fields := changedFields(before, after); len(fields) > 0 {
			rep.Repaired = append(rep.Repaired, subject)
			log.InfoContext(ctx, "billing: reconcile repaired an entitlement", slog.String("subject", subject),
				slog.String("subscription", v.ID), slog.Any("fields", fields))
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
	rep.Unparked, rep.Dropped, err = l.sweepParked(ctx, log)
	return rep, err
}

// pageObjects returns the raw JSON of each object of a list page, by ID,
// from the response body stripe-go kept; nil when it kept none.
func pageObjects(pl *stripe.SubscriptionList) map[string]json.RawMessage {
	if pl == nil || pl.LastResponse == nil || len(pl.LastResponse.RawJSON) == 0 {
		return nil
	}
	var body struct {
		Data []json.RawMessage `json:"data"`
	}
	if json.Unmarshal(pl.LastResponse.RawJSON, &body) != nil {
		return nil
	}
	out := make(map[string]json.RawMessage, len(body.Data))
	for _, raw := range body.Data {
		var o struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(raw, &o) == nil && o.ID != "" {
			out[o.ID] = raw
		}
	}
	return out
}

// Run keeps entitlements in step with Stripe until ctx ends, then returns
// nil: at once and then every Config.ReconcileEvery it runs
// [Lifecycle.Reconcile] when Config.Stripe is set, and otherwise applies
// the events parked for customers linked since and drops those parked
// longer than Config.ParkFor. A pass that fails is logged at ERROR and
// retried at the next tick.
func (l *Lifecycle) Run(ctx context.Context) error {
	t := time.NewTicker(l.cfg.ReconcileEvery)
	defer t.Stop()
	for {
		l.runOnce(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (l *Lifecycle) runOnce(ctx context.Context) {
	log := l.cfg.Logger.With("op", "reconcile")
	if l.cfg.Stripe == nil {
		applied, dropped, err := l.sweepParked(ctx, log)
		if err != nil && ctx.Err() == nil {
			log.ErrorContext(ctx, "billing: sweep of parked events failed", "err", err)
		}
		log.InfoContext(ctx, "billing: parked events swept", "applied", applied, "dropped", len(dropped))
		return
	}
	rep, err := l.Reconcile(ctx)
	if err != nil && ctx.Err() == nil {
		log.ErrorContext(ctx, "billing: reconcile failed", "err", err)
		return
	}
	log.InfoContext(ctx, "billing: reconciled", "listed", rep.Listed, "repaired", len(rep.Repaired),
		"unmapped", len(rep.Unmapped), "unreadable", len(rep.Unreadable), "missing", len(rep.Missing),
		"unparked", rep.Unparked, "dropped", len(rep.Dropped))
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
	// (Entitlements stored before MeteredItems existed gain it: no drift.)
	add("metered_items", a.MeteredItems != nil && !maps.Equal(a.MeteredItems, b.MeteredItems))
	add("period", a.Period != b.Period)
	add("previous_period", a.PreviousPeriod != b.PreviousPeriod)
	add("previous_tier", a.PreviousTier != b.PreviousTier)
	add("grace_until", !a.GraceUntil.Equal(b.GraceUntil))
	add("grace_tier", a.GraceTier != b.GraceTier)
	return f
}
