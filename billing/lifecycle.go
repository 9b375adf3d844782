package billing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"

	"github.com/billkit/billkit/checkout"
	"github.com/billkit/billkit/quota"
	"github.com/billkit/billkit/webhook"
)

// Metadata keys that link Stripe objects to a subject. They are the keys
// the checkout package writes on Checkout Sessions (metadata) and, through
// subscription_data.metadata, on the subscriptions they create; the session's
// client_reference_id holds the subject too.
const (
	// MetadataSubject holds the subject: [checkout.MetadataSubject].
	MetadataSubject = checkout.MetadataSubject
	// MetadataTier holds the tier's name: [checkout.MetadataTier].
	MetadataTier = checkout.MetadataTier
)

// DefaultGracePeriod is how long the default grace policy keeps a past_due
// subject's access: [KeepAccess](DefaultGracePeriod).
const DefaultGracePeriod = 7 * 24 * time.Hour

// Grace is what a past_due subject keeps: the limits of Tier until Until.
// The zero Grace suspends at once.
type Grace struct {
	// Until is when the grace access ends.
	Until time.Time
	// Tier is the tier whose limits apply until then.
	Tier string
}

// GracePolicy decides what a subject keeps while its subscription is
// past_due. since is when the payment first failed (the failed invoice's
// finalization). It must be a pure function: the lifecycle calls it every
// time it derives a past_due entitlement.
type GracePolicy func(e Entitlement, since time.Time) Grace

// KeepAccess keeps the subject's own plan for d after the payment failed,
// then suspends it. KeepAccess(DefaultGracePeriod) is the default policy.
func KeepAccess(d time.Duration) GracePolicy {
	return func(e Entitlement, since time.Time) Grace { return Grace{Until: since.Add(d), Tier: e.Tier} }
}

// DowngradeTo gives the subject tier's limits for d after the payment
// failed, then suspends it.
func DowngradeTo(tier string, d time.Duration) GracePolicy {
	return func(_ Entitlement, since time.Time) Grace { return Grace{Until: since.Add(d), Tier: tier} }
}

// Suspend denies a past_due subject at once.
func Suspend() GracePolicy {
	return func(Entitlement, time.Time) Grace { return Grace{} }
}

// Config configures a [Lifecycle]. Store and Plans are required; every other
// zero field means its documented default.
type Config struct {
	// Store keeps the entitlements. Required.
	Store EntitlementStore
	// Plans maps subscription prices to tiers. Required.
	Plans *Plans
	// Grace decides what a past_due subject keeps. The default value is
	// KeepAccess(DefaultGracePeriod): 7 days of the subject's own plan.
	Grace GracePolicy
	// Stripe is the API client used by [Lifecycle.Reconcile] and, with
	// Refetch, by the event handlers. Build it with client.New and set
	// MaxNetworkRetries on its backends. Optional: without it Reconcile
	// returns ErrInvalidConfig.
	Stripe *client.API
	// Refetch makes every subscription and invoice event re-read the
	// subscription from Stripe and apply that snapshot, so that the result
	// no longer depends on the event's payload or its order at all. It
	// costs one API call per event and requires Stripe. The default value
	// is false: the event's own object is applied.
	Refetch bool
	// OnChange, when set, is called after an event or Reconcile changed an
	// entitlement, for example to call [Limits.Invalidate] so that this
	// process enforces the change at once (other processes do within their
	// Limits TTL). It must be safe for concurrent use. The default value
	// is nil.
	OnChange func(ctx context.Context, before, after Entitlement)
	// Logger receives a record for every event that changed nothing
	// (stale, unmapped or malformed). The default value discards records.
	Logger *slog.Logger
	// Now returns the current time. The default value is time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() (Config, error) {
	switch {
	case c.Store == nil:
		return c, fmt.Errorf("%w: Store is required", ErrInvalidConfig)
	case c.Plans == nil || len(c.Plans.list) == 0:
		return c, fmt.Errorf("%w: Plans is required", ErrInvalidConfig)
	case c.Refetch && c.Stripe == nil:
		return c, fmt.Errorf("%w: Refetch needs Stripe", ErrInvalidConfig)
	}
	if c.Grace == nil {
		c.Grace = KeepAccess(DefaultGracePeriod)
	}
	probe := c.Plans.list[0]
	if g := c.Grace(Entitlement{Tier: probe.Tier}, time.Unix(0, 0)); g.Tier != "" {
		if _, ok := c.Plans.ByTier(g.Tier); !ok {
			return c, fmt.Errorf("%w: Grace: tier %q is not in Plans", ErrInvalidConfig, g.Tier)
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}

// Lifecycle turns Stripe's subscription lifecycle events into entitlements.
// It is safe for concurrent use; the zero value is not usable, call
// [NewLifecycle].
//
// Ordering: each handler merges the fact its event carries into the
// entitlement's [Sources], keeping the newer of the stored and the incoming
// fact by the event's creation time (a subscription snapshot of an older
// event never replaces a newer one), with deterministic tie-breaks for
// events of the same second; the entitlement is then derived from the
// facts alone. So duplicates change nothing and every order of the same
// events gives the same entitlement. See the package documentation.
type Lifecycle struct {
	cfg Config
}

// NewLifecycle returns a lifecycle, or an error wrapping ErrInvalidConfig.
func NewLifecycle(cfg Config) (*Lifecycle, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Lifecycle{cfg: c}, nil
}

// Event types the lifecycle handles.
var lifecycleEvents = []stripe.EventType{
	stripe.EventTypeCheckoutSessionCompleted,
	stripe.EventTypeCustomerSubscriptionCreated,
	stripe.EventTypeCustomerSubscriptionUpdated,
	stripe.EventTypeCustomerSubscriptionDeleted,
	stripe.EventTypeCustomerSubscriptionPaused,
	stripe.EventTypeCustomerSubscriptionResumed,
	stripe.EventTypeInvoicePaid,
	stripe.EventTypeInvoicePaymentFailed,
}

// EventTypes returns the Stripe event types [Lifecycle.Register] handles;
// enable them on the webhook endpoint.
func (l *Lifecycle) EventTypes() []stripe.EventType {
	return append([]stripe.EventType(nil), lifecycleEvents...)
}

// Register adds the lifecycle's handlers to h for every type of
// [Lifecycle.EventTypes].
func (l *Lifecycle) Register(h *webhook.Handler) {
	for _, t := range lifecycleEvents {
		h.On(t, l.HandleEvent)
	}
}

// HandleEvent applies one verified event; it is a [webhook.HandlerFunc].
// Events of other types, events that map to no known subject, stale events
// and malformed objects are acknowledged (nil) and logged; an error means
// the store or Stripe failed and the event should be retried.
func (l *Lifecycle) HandleEvent(ctx context.Context, ev *stripe.Event) error {
	if ev == nil {
		return nil
	}
	log := l.cfg.Logger.With("event_id", ev.ID, "event_type", string(ev.Type))
	if ev.Created <= 0 {
		log.WarnContext(ctx, "billing: event without a creation time ignored")
		return nil
	}
	at := time.Unix(ev.Created, 0).UTC()
	var err error
	switch ev.Type {
	case stripe.EventTypeCheckoutSessionCompleted:
		var cs stripe.CheckoutSession
		if !l.decode(ctx, log, ev, "checkout.session", &cs) {
			return nil
		}
		err = l.onCheckout(ctx, log, ev, at, &cs)
	case stripe.EventTypeCustomerSubscriptionCreated, stripe.EventTypeCustomerSubscriptionUpdated,
		stripe.EventTypeCustomerSubscriptionDeleted, stripe.EventTypeCustomerSubscriptionPaused,
		stripe.EventTypeCustomerSubscriptionResumed:
		var sub stripe.Subscription
		if !l.decode(ctx, log, ev, "subscription", &sub) {
			return nil
		}
		if ev.Type == stripe.EventTypeCustomerSubscriptionDeleted {
			sub.Status = stripe.SubscriptionStatusCanceled
		}
		err = l.onSubscription(ctx, log, ev, at, &sub)
	case stripe.EventTypeInvoicePaid, stripe.EventTypeInvoicePaymentFailed:
		var inv stripe.Invoice
		if !l.decode(ctx, log, ev, "invoice", &inv) {
			return nil
		}
		err = l.onInvoice(ctx, log, ev, at, &inv, ev.Type == stripe.EventTypeInvoicePaid)
	default:
		return nil
	}
	return err
}

// decode unmarshals the event's object into v after checking its "object"
// field; it logs and reports false for a missing or mistyped object.
func (l *Lifecycle) decode(ctx context.Context, log *slog.Logger, ev *stripe.Event, object string, v any) bool {
	if ev.Data == nil || len(ev.Data.Raw) == 0 {
		log.WarnContext(ctx, "billing: event without data.object ignored")
		return false
	}
	var probe struct {
		Object string `json:"object"`
		ID     string `json:"id"`
	}
	if err := json.Unmarshal(ev.Data.Raw, &probe); err != nil || probe.Object != object || probe.ID == "" {
		log.WarnContext(ctx, "billing: event object ignored", "want_object", object, "got_object", probe.Object)
		return false
	}
	if err := json.Unmarshal(ev.Data.Raw, v); err != nil {
		log.WarnContext(ctx, "billing: undecodable event object ignored", "object", object, "error", err)
		return false
	}
	return true
}

func (l *Lifecycle) onCheckout(ctx context.Context, log *slog.Logger, ev *stripe.Event, at time.Time, cs *stripe.CheckoutSession) error {
	if cs.Mode != "" && cs.Mode != stripe.CheckoutSessionModeSubscription {
		return nil
	}
	subject := cs.ClientReferenceID
	if subject == "" {
		subject = cs.Metadata[MetadataSubject]
	}
	if subject == "" {
		log.InfoContext(ctx, "billing: checkout session without a subject ignored", "session", cs.ID)
		return nil
	}
	f := CheckoutFact{At: at, EventID: ev.ID, SessionID: cs.ID, Tier: cs.Metadata[MetadataTier]}
	if cs.Customer != nil {
		f.CustomerID = cs.Customer.ID
	}
	if cs.Subscription != nil {
		f.SubscriptionID = cs.Subscription.ID
	}
	return l.update(ctx, log, subject, func(e *Entitlement) { mergeCheckout(e, f) })
}

func (l *Lifecycle) onSubscription(ctx context.Context, log *slog.Logger, ev *stripe.Event, at time.Time, sub *stripe.Subscription) error {
	subject, err := l.subjectOf(ctx, sub.Metadata, customerID(sub.Customer))
	if err != nil {
		return err
	}
	if l.cfg.Refetch {
		fresh, fetchedAt, err := l.fetch(ctx, sub.ID)
		if err != nil {
			return err
		}
		sub, at = fresh, maxTime(at, fetchedAt)
		if subject == "" {
			if subject, err = l.subjectOf(ctx, sub.Metadata, customerID(sub.Customer)); err != nil {
				return err
			}
		}
	}
	if subject == "" {
		log.InfoContext(ctx, "billing: subscription of no known subject ignored", "subscription", sub.ID)
		return nil
	}
	f := l.snapshot(ctx, log, sub, at, ev.ID)
	return l.update(ctx, log, subject, func(e *Entitlement) { mergeSubscription(e, f) })
}

func (l *Lifecycle) onInvoice(ctx context.Context, log *slog.Logger, ev *stripe.Event, at time.Time, inv *stripe.Invoice, paid bool) error {
	if inv.Subscription == nil || inv.Subscription.ID == "" {
		return nil // not a subscription invoice
	}
	var meta map[string]string
	if inv.SubscriptionDetails != nil {
		meta = inv.SubscriptionDetails.Metadata
	}
	subject, err := l.subjectOf(ctx, meta, customerID(inv.Customer))
	if err != nil || subject == "" {
		if err == nil {
			log.InfoContext(ctx, "billing: invoice of no known subject ignored", "invoice", inv.ID)
		}
		return err
	}
	f := InvoiceFact{At: at, EventID: ev.ID, ID: inv.ID, SubscriptionID: inv.Subscription.ID,
		CustomerID: customerID(inv.Customer), Paid: paid}
	if inv.StatusTransitions != nil && inv.StatusTransitions.FinalizedAt > 0 {
		f.FinalizedAt = time.Unix(inv.StatusTransitions.FinalizedAt, 0).UTC()
	}
	if inv.Lines != nil {
		for _, li := range inv.Lines.Data {
			if li == nil || li.Price == nil {
				continue
			}
			if p, ok := l.cfg.Plans.ByPriceID(li.Price.ID); ok {
				f.Tier = p.Tier
				if li.Period != nil && li.Period.End > li.Period.Start {
					f.Period = quota.Period{Start: time.Unix(li.Period.Start, 0).UTC(), End: time.Unix(li.Period.End, 0).UTC()}
				}
				break
			}
		}
	}
	var snap *SubscriptionFact
	if l.cfg.Refetch {
		fresh, fetchedAt, err := l.fetch(ctx, inv.Subscription.ID)
		if err != nil {
			return err
		}
		s := l.snapshot(ctx, log, fresh, maxTime(at, fetchedAt), ev.ID)
		snap = &s
	}
	return l.update(ctx, log, subject, func(e *Entitlement) {
		mergeInvoice(e, f)
		if snap != nil {
			mergeSubscription(e, *snap)
		}
	})
}

// update merges facts into subject's entitlement and derives it.
func (l *Lifecycle) update(ctx context.Context, log *slog.Logger, subject string, merge func(*Entitlement)) error {
	_, _, err := l.apply(ctx, log, subject, merge)
	return err
}

// apply merges facts into subject's entitlement, derives it, calls OnChange
// when it changed, and returns the entitlement before and after.
func (l *Lifecycle) apply(ctx context.Context, log *slog.Logger, subject string, merge func(*Entitlement)) (before, after Entitlement, err error) {
	after, err = l.cfg.Store.Update(ctx, subject, func(e *Entitlement) error {
		before = *e
		merge(e)
		prune(e)
		derive(e, l.cfg.Grace)
		return nil
	})
	if err != nil {
		return before, after, fmt.Errorf("billing: update entitlement: %w", err)
	}
	if after.UpdatedAt.Equal(before.UpdatedAt) {
		log.DebugContext(ctx, "billing: event changed nothing (duplicate or older than the entitlement)", "subject", subject)
		return before, after, nil
	}
	log.DebugContext(ctx, "billing: entitlement updated", "subject", subject, "status", string(after.Status), "tier", after.Tier)
	if l.cfg.OnChange != nil {
		l.cfg.OnChange(ctx, before, after)
	}
	return before, after, nil
}

// subjectOf maps an object to its subject: the metadata's billkit_subject,
// else the customer index. It returns "" (and no error) for neither.
func (l *Lifecycle) subjectOf(ctx context.Context, meta map[string]string, customer string) (string, error) {
	if s := meta[MetadataSubject]; s != "" {
		return s, nil
	}
	if customer == "" {
		return "", nil
	}
	s, err := l.cfg.Store.SubjectByCustomer(ctx, customer)
	if errors.Is(err, ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("billing: map customer: %w", err)
	}
	return s, nil
}

// fetch reads a subscription from Stripe. The snapshot's time is when the
// read began, less a second (events have one-second resolution, so an event
// created in the same second as the read wins over it).
func (l *Lifecycle) fetch(ctx context.Context, id string) (*stripe.Subscription, time.Time, error) {
	start := l.cfg.Now().UTC().Truncate(time.Second).Add(-time.Second)
	p := &stripe.SubscriptionParams{}
	p.Context = ctx
	sub, err := l.cfg.Stripe.Subscriptions.Get(id, p)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("billing: read subscription from Stripe: %w", err)
	}
	return sub, start, nil
}

// snapshot turns a Stripe subscription into a fact: the tier is the plan
// whose price is on one of its items, the metered item the one whose price
// is that plan's (or any plan's) metered price.
func (l *Lifecycle) snapshot(ctx context.Context, log *slog.Logger, sub *stripe.Subscription, at time.Time, eventID string) SubscriptionFact {
	f := SubscriptionFact{At: at, EventID: eventID, ID: sub.ID, CustomerID: customerID(sub.Customer), Status: Status(sub.Status)}
	if sub.CurrentPeriodEnd > sub.CurrentPeriodStart {
		f.Period = quota.Period{Start: time.Unix(sub.CurrentPeriodStart, 0).UTC(), End: time.Unix(sub.CurrentPeriodEnd, 0).UTC()}
	}
	var plan Plan
	if sub.Items != nil {
		for _, it := range sub.Items.Data {
			if it == nil || it.Price == nil {
				continue
			}
			if p, ok := l.cfg.Plans.ByPriceID(it.Price.ID); ok && f.Tier == "" {
				plan, f.Tier, f.PriceID = p, p.Tier, it.Price.ID
			}
		}
		for _, it := range sub.Items.Data {
			if it == nil || it.Price == nil {
				continue
			}
			if (plan.MeteredPriceID != "" && it.Price.ID == plan.MeteredPriceID) ||
				(plan.MeteredPriceID == "" && f.MeteredItemID == "" && l.cfg.Plans.IsMeteredPrice(it.Price.ID)) {
				f.MeteredItemID = it.ID
			}
		}
	}
	if f.Tier == "" {
		log.WarnContext(ctx, "billing: subscription has no price of a configured plan", "subscription", sub.ID)
	}
	return f
}

func customerID(c *stripe.Customer) string {
	if c == nil {
		return ""
	}
	return c.ID
}
