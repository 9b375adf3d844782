package billing

import (
	"maps"
	"slices"
	"time"

	"github.com/billkit/billkit/quota"
)

// The lifecycle keeps, per subject, the newest fact of each kind (a
// subscription snapshot, an invoice outcome, a completed checkout) and
// derives the entitlement from them. Merging a fact keeps whichever of the
// stored and the incoming fact is newer by a total order (event time, then
// deterministic tie-breaks), so merging is commutative and idempotent: any
// order of the same events, with any duplicates, ends in the same facts and
// therefore the same entitlement.

// statusRank orders subscription statuses along the lifecycle, to break ties
// between snapshots carried by events created in the same second: the one
// further along wins.
func statusRank(s Status) int {
	switch s {
	case StatusIncomplete:
		return 1
	case StatusTrialing:
		return 2
	case StatusActive:
		return 3
	case StatusPastDue:
		return 4
	case StatusUnpaid:
		return 5
	case StatusPaused:
		return 6
	case StatusIncompleteExpired, StatusCanceled:
		return 7
	}
	return 0
}

func cmpTime(a, b time.Time) int { return a.Compare(b) }

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// newerSubscription reports whether snapshot x should replace cur.
func newerSubscription(x, cur subscriptionFact) bool {
	if cur.ID == "" {
		return true
	}
	if x.ID != cur.ID {
		// Another subscription of the same subject: a live one replaces
		// an ended one whatever the times, an ended one never replaces a
		// live one (the subject moved on), and otherwise the newer wins.
		if xl, cl := !x.Status.Terminal(), !cur.Status.Terminal(); xl != cl {
			return xl
		}
	}
	if c := cmpTime(x.At, cur.At); c != 0 {
		return c > 0
	}
	if c := cmpTime(x.Period.End, cur.Period.End); c != 0 {
		return c > 0
	}
	if c := statusRank(x.Status) - statusRank(cur.Status); c != 0 {
		return c > 0
	}
	return cmpString(x.EventID, cur.EventID) > 0
}

// mergeSubscription merges snapshot x into e's sources and reports whether
// anything changed. Periods of the same subscription seen in any snapshot,
// even an older one, feed PreviousPeriod: the latest period that starts
// before the current one. PreviousTier is the tier of the newest snapshot
// (by event time) of that period: the tier the period ended on.
func mergeSubscription(e *Entitlement, x subscriptionFact) {
	cur := e.sources.Subscription
	win := cur
	if newerSubscription(x, cur) {
		win = x
	}
	type cand struct {
		p    quota.Period
		tier string
		at   time.Time
	}
	var cands []cand
	if x.ID == win.ID {
		cands = append(cands, cand{x.Period, x.Tier, x.At}, cand{x.PreviousPeriod, x.PreviousTier, x.PreviousAt})
	}
	if cur.ID == win.ID {
		cands = append(cands, cand{cur.Period, cur.Tier, cur.At}, cand{cur.PreviousPeriod, cur.PreviousTier, cur.PreviousAt})
	}
	var best cand
	for _, c := range cands {
		if c.p.IsZero() || !c.p.Start.Before(win.Period.Start) {
			continue
		}
		better := best.p.IsZero()
		if !better {
			if d := c.p.Start.Compare(best.p.Start); d != 0 {
				better = d > 0
			} else if d := c.at.Compare(best.at); d != 0 {
				better = d > 0
			} else {
				better = c.tier > best.tier
			}
		}
		if better {
			best = c
		}
	}
	win.PreviousPeriod, win.PreviousTier, win.PreviousAt = best.p, best.tier, best.at
	e.sources.Subscription = win
}

// mergeInvoice keeps the newer invoice outcome. In the same second a payment
// beats a failure (a retry that succeeded), then the event ID decides.
func mergeInvoice(e *Entitlement, x invoiceFact) {
	cur := e.sources.Invoice
	newer := cur.At.IsZero()
	if !newer {
		switch c := cmpTime(x.At, cur.At); {
		case c != 0:
			newer = c > 0
		case x.Paid != cur.Paid:
			newer = x.Paid
		default:
			newer = cmpString(x.EventID, cur.EventID) > 0
		}
	}
	if newer {
		e.sources.Invoice = x
	}
}

// mergeCheckout keeps the newer completed checkout.
func mergeCheckout(e *Entitlement, x checkoutFact) {
	cur := e.sources.Checkout
	if cur.At.IsZero() || x.At.After(cur.At) || (x.At.Equal(cur.At) && cmpString(x.EventID, cur.EventID) > 0) {
		e.sources.Checkout = x
	}
}

// mergeFeatures keeps the newer Stripe Entitlements summary: by event time,
// then by event ID.
func mergeFeatures(e *Entitlement, x featuresFact) {
	cur := e.sources.Features
	if cur == nil || x.At.After(cur.At) || (x.At.Equal(cur.At) && cmpString(x.EventID, cur.EventID) > 0) {
		e.sources.Features = &x
	}
}

// prune drops facts that a newer fact has made irrelevant, so that an event
// older than the newest one of its subscription leaves no trace and every
// order of the same events stores the same facts: a checkout not newer than
// the subscription snapshot, and an invoice outcome older than the snapshot
// (except the failure that made it past_due) or than the checkout that
// follows it.
func prune(e *Entitlement) {
	s, inv, co := &e.sources.Subscription, &e.sources.Invoice, &e.sources.Checkout
	if s.ID != "" {
		if !co.At.IsZero() && !co.At.After(s.At) {
			*co = checkoutFact{}
		}
		// A failed invoice of a past_due subscription is kept: it tells
		// when the grace period began.
		keep := !inv.Paid && inv.SubscriptionID == s.ID && s.Status == StatusPastDue
		if !inv.At.IsZero() && inv.At.Before(s.At) && !keep {
			*inv = invoiceFact{}
		}
	}
	if !co.At.IsZero() && !inv.At.IsZero() && inv.At.Before(co.At) {
		*inv = invoiceFact{}
	}
}

// derive sets e's derived fields from its sources.
//
//   - With a subscription snapshot (unless it ended and a checkout completed
//     after it: a new purchase is on its way), the status is the
//     snapshot's, corrected by an invoice outcome of the same subscription
//     that is at least as new: a payment makes incomplete, past_due or
//     unpaid active; a failure makes active or trialing past_due.
//   - Without one, a completed checkout is pending, and becomes active when
//     an invoice of its subscription is paid.
//   - StripeFeatures are the newest Entitlements summary's, when it is of
//     the entitlement's customer.
//   - past_due gets the grace policy's access end and tier, counted from
//     the failed invoice's finalization (else from the snapshot's time).
func derive(e *Entitlement, grace GracePolicy) {
	src := e.sources
	s, inv, co := src.Subscription, src.Invoice, src.Checkout

	e.LastEventAt = maxTime(s.At, inv.At, co.At)
	e.CustomerID = firstNonEmpty(s.CustomerID, co.CustomerID, inv.CustomerID, e.CustomerID)
	e.StripeFeatures = nil
	if f := src.Features; f != nil {
		e.LastEventAt = maxTime(e.LastEventAt, f.At)
		if f.CustomerID == e.CustomerID && len(f.Features) > 0 {
			e.StripeFeatures = slices.Clone(f.Features)
		}
	}
	e.Status, e.Tier, e.SubscriptionID, e.MeteredItemID, e.MeteredItems = StatusNone, "", "", "", nil
	e.Period, e.PreviousPeriod, e.PreviousTier = quota.Period{}, quota.Period{}, ""
	e.GraceUntil, e.GraceTier = time.Time{}, ""

	useSub := s.ID != "" && !(s.Status.Terminal() && co.At.After(s.At))
	if useSub {
		e.Status, e.Tier, e.SubscriptionID, e.MeteredItemID = s.Status, s.Tier, s.ID, s.MeteredItemID
		e.MeteredItems = maps.Clone(s.MeteredItems)
		e.Period, e.PreviousPeriod, e.PreviousTier = s.Period, s.PreviousPeriod, s.PreviousTier
		if !inv.At.IsZero() && inv.SubscriptionID == s.ID && !inv.At.Before(s.At) {
			switch {
			case inv.Paid && (s.Status == StatusIncomplete || s.Status == StatusPastDue || s.Status == StatusUnpaid):
				e.Status = StatusActive
				if e.Period.IsZero() {
					e.Period = inv.Period
				}
			case !inv.Paid && (s.Status == StatusActive || s.Status == StatusTrialing):
				e.Status = StatusPastDue
			}
		}
	} else if !co.At.IsZero() {
		e.Status, e.Tier, e.SubscriptionID = StatusPending, co.Tier, co.SubscriptionID
		if inv.Paid && !inv.At.IsZero() && (co.SubscriptionID == "" || inv.SubscriptionID == co.SubscriptionID) && !inv.At.Before(co.At) {
			e.Status = StatusActive
			e.Tier = firstNonEmpty(inv.Tier, co.Tier)
			e.SubscriptionID = inv.SubscriptionID
			e.Period = inv.Period
		}
	}

	if e.Status == StatusPastDue {
		since := s.At
		if !inv.At.IsZero() && !inv.Paid && inv.SubscriptionID == e.SubscriptionID {
			since = inv.At
			if !inv.FinalizedAt.IsZero() {
				since = inv.FinalizedAt
			}
		}
		g := grace(*e, since)
		e.GraceUntil, e.GraceTier = g.Until.UTC(), g.Tier
		if e.GraceUntil.IsZero() || !e.GraceUntil.After(since) {
			e.GraceUntil, e.GraceTier = time.Time{}, ""
		}
	}
}

func maxTime(ts ...time.Time) time.Time {
	var m time.Time
	for _, t := range ts {
		if t.After(m) {
			m = t
		}
	}
	return m
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}
