package billing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/stripe/stripe-go/v76"
)

// HandleEvent applies one verified event; it is a [webhook.EventFunc].
//
// It reads the event's object in whatever API version Stripe rendered it
// (see the package documentation, "Stripe API versions"). Events of other
// types, objects of another type than the event's, checkouts that are not
// billkit's, and subscriptions and invoices of no configured plan are
// acknowledged (nil). An event about one of billkit's subscriptions from
// which the lifecycle cannot read what it needs is refused: HandleEvent
// returns an [*EventError] wrapping [ErrUnreadable], logs it at ERROR and
// passes it to Config.OnEventError, and Stripe delivers the event again.
// An event whose customer is not linked to a subject yet is parked and
// applied once the link appears. Any other error means the store or Stripe
// failed, and the event should be retried.
func (l *Lifecycle) HandleEvent(ctx context.Context, ev *stripe.Event) error {
	if ev == nil {
		return nil
	}
	obs := l.cfg.Observer.Event
	if obs == nil {
		return l.handleEvent(ctx, ev)
	}
	t := &eventTrack{}
	start := time.Now()
	err := l.handleEvent(context.WithValue(ctx, trackKey{}, t), ev)
	obs(ctx, EventObservation{Outcome: eventOutcome(t, err), EventID: ev.ID, EventType: string(ev.Type),
		APIVersion: ev.APIVersion, Duration: time.Since(start), Err: err})
	return err
}

func (l *Lifecycle) handleEvent(ctx context.Context, ev *stripe.Event) error {
	log := l.cfg.Logger.With("event_id", ev.ID, "event_type", string(ev.Type), "api_version", ev.APIVersion)
	if ev.Created <= 0 {
		log.WarnContext(ctx, "billing: event without a creation time ignored")
		return nil
	}
	at := time.Unix(ev.Created, 0).UTC()
	var raw []byte
	if ev.Data != nil {
		raw = ev.Data.Raw
	}
	var err error
	switch ev.Type {
	case stripe.EventTypeCheckoutSessionCompleted:
		err = l.onCheckout(ctx, log, ev, at, raw)
	case stripe.EventTypeCustomerSubscriptionCreated, stripe.EventTypeCustomerSubscriptionUpdated,
		stripe.EventTypeCustomerSubscriptionDeleted, stripe.EventTypeCustomerSubscriptionPaused,
		stripe.EventTypeCustomerSubscriptionResumed:
		err = l.onSubscription(ctx, log, ev, at, raw)
	case stripe.EventTypeInvoicePaid, stripe.EventTypeInvoicePaymentFailed:
		err = l.onInvoice(ctx, log, ev, at, raw, ev.Type == stripe.EventTypeInvoicePaid)
	case eventSummaryUpdated:
		err = l.onFeatures(ctx, log, ev, at, raw)
	default:
		return nil
	}
	if errors.Is(err, errObjectType) {
		log.WarnContext(ctx, "billing: event object ignored", "err", err)
		return nil
	}
	var ee *EventError
	if errors.As(err, &ee) {
		l.report(ctx, ee)
	}
	return err
}

// report logs an event the lifecycle did not apply at ERROR and passes it
// to Config.OnEventError.
func (l *Lifecycle) report(ctx context.Context, ee *EventError) {
	l.cfg.Logger.ErrorContext(ctx, "billing: event not applied", "event_id", ee.EventID,
		"event_type", ee.EventType, "api_version", ee.APIVersion, "err", ee.Err)
	if l.cfg.OnEventError != nil {
		l.cfg.OnEventError(ctx, ee)
	}
}

// unreadable returns the EventError of an event whose object lacks what
// billkit needs.
func unreadable(ev *stripe.Event, format string, args ...any) *EventError {
	return &EventError{EventID: ev.ID, EventType: string(ev.Type), APIVersion: ev.APIVersion,
		Err: fmt.Errorf("%w: %s", ErrUnreadable, fmt.Sprintf(format, args...))}
}

// readFailed turns an error of a read* function into the event's result:
// errObjectType as it is (acknowledged), anything else unreadable.
func readFailed(ev *stripe.Event, err error) error {
	if errors.Is(err, errObjectType) {
		return err
	}
	return unreadable(ev, "%v", err)
}

func (l *Lifecycle) onCheckout(ctx context.Context, log *slog.Logger, ev *stripe.Event, at time.Time, raw []byte) error {
	cs, err := readCheckoutSession(raw)
	if err != nil {
		return readFailed(ev, err)
	}
	if cs.Mode != "" && cs.Mode != string(stripe.CheckoutSessionModeSubscription) {
		return nil
	}
	subject := firstNonEmpty(cs.ClientReferenceID, cs.Metadata[metaSubject])
	if subject == "" {
		log.InfoContext(ctx, "billing: checkout session without a subject ignored", "session", cs.ID)
		return nil
	}
	if err := checkSubject(subject); err != nil {
		return unreadable(ev, "checkout session %s: %v", cs.ID, err)
	}
	f := checkoutFact{At: at, EventID: ev.ID, SessionID: cs.ID, Tier: cs.Metadata[metaTier],
		CustomerID: cs.CustomerID, SubscriptionID: cs.SubscriptionID}
	return l.update(ctx, log, subject, func(e *Entitlement) { mergeCheckout(e, f) })
}

func (l *Lifecycle) onSubscription(ctx context.Context, log *slog.Logger, ev *stripe.Event, at time.Time, raw []byte) error {
	sub, err := readSubscription(raw)
	if err != nil {
		return readFailed(ev, err)
	}
	if ev.Type == stripe.EventTypeCustomerSubscriptionDeleted {
		sub.Status = StatusCanceled
	}
	if l.cfg.Refetch {
		fresh, fetchedAt, err := l.fetch(ctx, sub.ID)
		if err != nil {
			return err
		}
		if ev.Type == stripe.EventTypeCustomerSubscriptionDeleted && fresh.Status == "" {
			fresh.Status = StatusCanceled
		}
		sub, at = fresh, maxTime(at, fetchedAt)
	}
	subject, err := l.subjectOf(ctx, sub.Metadata, sub.CustomerID)
	if err != nil {
		return err
	}
	if err := checkSubject(subject); subject != "" && err != nil {
		return unreadable(ev, "subscription %s: %v", sub.ID, err)
	}
	f := l.snapshot(sub, at, ev.ID)
	if f.Tier == "" {
		follows, err := l.follows(ctx, subject, sub.ID, sub.Metadata)
		if err != nil {
			return err
		}
		if follows {
			return unreadable(ev, "subscription %s has no item with a price of a configured plan", sub.ID)
		}
		log.InfoContext(ctx, "billing: subscription of no configured plan ignored", "subscription", sub.ID)
		return nil
	}
	switch {
	case f.Period.IsZero():
		return unreadable(ev, "subscription %s has no current period at its top level or on its items", sub.ID)
	case f.Status == "":
		return unreadable(ev, "subscription %s has no status", sub.ID)
	}
	if subject == "" {
		return l.park(ctx, log, ev, sub.CustomerID, parkedFact{Subscription: &f})
	}
	return l.update(ctx, log, subject, func(e *Entitlement) { mergeSubscription(e, f) })
}

// follows reports whether billkit follows subscription id although none of
// its prices is a configured plan's: it carries billkit's metadata, or it is
// the subscription subject's entitlement follows. Such a subscription is
// misconfigured (a plan is missing from the catalog), not someone else's.
func (l *Lifecycle) follows(ctx context.Context, subject, id string, meta map[string]string) (bool, error) {
	if meta[metaSubject] != "" || meta[metaTier] != "" {
		return true, nil
	}
	if subject == "" {
		return false, nil
	}
	e, err := l.cfg.Store.Get(ctx, subject)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("billing: read entitlement: %w", err)
	}
	return e.SubscriptionID == id, nil
}

func (l *Lifecycle) onInvoice(ctx context.Context, log *slog.Logger, ev *stripe.Event, at time.Time, raw []byte, paid bool) error {
	inv, err := readInvoice(raw)
	if err != nil {
		return readFailed(ev, err)
	}
	if inv.SubscriptionID == "" {
		if inv.aboutSubscription() {
			return unreadable(ev, "invoice %s bills a subscription but names none at its top level or under parent.subscription_details", inv.ID)
		}
		return nil // not a subscription invoice
	}
	f := invoiceFact{At: at, EventID: ev.ID, ID: inv.ID, SubscriptionID: inv.SubscriptionID,
		CustomerID: inv.CustomerID, Paid: paid, FinalizedAt: inv.FinalizedAt}
	for _, li := range inv.Lines {
		if p, ok := l.cfg.Plans.byPriceID(li.PriceID); ok {
			f.Tier, f.Period = p.Tier, li.Period
			break
		}
	}
	var snap *subscriptionFact
	if l.cfg.Refetch {
		fresh, fetchedAt, err := l.fetch(ctx, inv.SubscriptionID)
		if err != nil {
			return err
		}
		if s := l.snapshot(fresh, maxTime(at, fetchedAt), ev.ID); s.Tier != "" && !s.Period.IsZero() && s.Status != "" {
			snap = &s
		}
	}
	subject, err := l.subjectOf(ctx, inv.SubscriptionMetadata, inv.CustomerID)
	if err != nil {
		return err
	}
	if err := checkSubject(subject); subject != "" && err != nil {
		return unreadable(ev, "invoice %s: %v", inv.ID, err)
	}
	if subject == "" {
		meta := inv.SubscriptionMetadata
		if f.Tier == "" && snap == nil && meta[metaSubject] == "" && meta[metaTier] == "" {
			log.InfoContext(ctx, "billing: invoice of no configured plan and no known subject ignored", "invoice", inv.ID)
			return nil
		}
		return l.park(ctx, log, ev, inv.CustomerID, parkedFact{Invoice: &f, Subscription: snap})
	}
	return l.update(ctx, log, subject, func(e *Entitlement) {
		mergeInvoice(e, f)
		if snap != nil {
			mergeSubscription(e, *snap)
		}
	})
}
