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
	// OnEventError, when set, is called for every event the lifecycle
	// refused or dropped (see [EventError]), for example to alert: an
	// event about a subscription that lacks what billkit needs, or one
	// whose customer stayed linked to no subject for ParkFor. It must be
	// safe for concurrent use. The default value is nil; such events are
	// logged at ERROR either way.
	OnEventError func(ctx context.Context, err *EventError)
	// Parking keeps the events of customers not yet linked to a subject
	// until the link appears. The default value is Store when it
	// implements [ParkingStore] ([RedisStore] and [MemoryStore] do); one
	// of the two is required.
	Parking ParkingStore
	// ParkFor is how long a parked event waits for its customer's link;
	// then the sweep of [Lifecycle.Run] drops it and reports it as
	// [ErrUnmapped]. The default value is [DefaultParkFor] (7 days).
	ParkFor time.Duration
	// ReconcileEvery is the time between two passes of [Lifecycle.Run].
	// The default value is one hour.
	ReconcileEvery time.Duration
	// Logger receives a record for every event that changed nothing
	// (stale, unmapped or malformed) and, at ERROR, every [EventError].
	// The default value discards records.
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
	if c.Parking == nil {
		ps, ok := c.Store.(ParkingStore)
		if !ok {
			return c, fmt.Errorf("%w: Parking is required (Store does not implement ParkingStore)", ErrInvalidConfig)
		}
		c.Parking = ps
	}
	switch {
	case c.ParkFor < 0, c.ReconcileEvery < 0:
		return c, fmt.Errorf("%w: ParkFor and ReconcileEvery must not be negative", ErrInvalidConfig)
	case c.ParkFor == 0:
		c.ParkFor = DefaultParkFor
	}
	if c.ReconcileEvery == 0 {
		c.ReconcileEvery = time.Hour
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
	subject := firstNonEmpty(cs.ClientReferenceID, cs.Metadata[MetadataSubject])
	if subject == "" {
		log.InfoContext(ctx, "billing: checkout session without a subject ignored", "session", cs.ID)
		return nil
	}
	f := CheckoutFact{At: at, EventID: ev.ID, SessionID: cs.ID, Tier: cs.Metadata[MetadataTier],
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
	if meta[MetadataSubject] != "" || meta[MetadataTier] != "" {
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
	f := InvoiceFact{At: at, EventID: ev.ID, ID: inv.ID, SubscriptionID: inv.SubscriptionID,
		CustomerID: inv.CustomerID, Paid: paid, FinalizedAt: inv.FinalizedAt}
	for _, li := range inv.Lines {
		if p, ok := l.cfg.Plans.ByPriceID(li.PriceID); ok {
			f.Tier, f.Period = p.Tier, li.Period
			break
		}
	}
	var snap *SubscriptionFact
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
	if subject == "" {
		meta := inv.SubscriptionMetadata
		if f.Tier == "" && snap == nil && meta[MetadataSubject] == "" && meta[MetadataTier] == "" {
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

// update merges facts into subject's entitlement and derives it.
func (l *Lifecycle) update(ctx context.Context, log *slog.Logger, subject string, merge func(*Entitlement)) error {
	_, _, err := l.apply(ctx, log, subject, merge)
	return err
}

// apply merges facts into subject's entitlement, derives it, calls OnChange
// when it changed, then applies the events parked for its customer (see
// [Lifecycle.park]), and returns the entitlement before and after.
func (l *Lifecycle) apply(ctx context.Context, log *slog.Logger, subject string, merge func(*Entitlement)) (before, after Entitlement, err error) {
	before, after, err = l.write(ctx, log, subject, merge)
	if err != nil || after.CustomerID == "" {
		return before, after, err
	}
	if a, ok, err := l.unpark(ctx, log, subject, after.CustomerID); err != nil {
		return before, after, err
	} else if ok {
		after = a
	}
	return before, after, nil
}

// write merges facts into subject's entitlement, derives it, and calls
// OnChange when it changed.
func (l *Lifecycle) write(ctx context.Context, log *slog.Logger, subject string, merge func(*Entitlement)) (before, after Entitlement, err error) {
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
func (l *Lifecycle) fetch(ctx context.Context, id string) (subscriptionView, time.Time, error) {
	start := l.cfg.Now().UTC().Truncate(time.Second).Add(-time.Second)
	p := &stripe.SubscriptionParams{}
	p.Context = ctx
	sub, err := l.cfg.Stripe.Subscriptions.Get(id, p)
	if err != nil {
		return subscriptionView{}, time.Time{}, fmt.Errorf("billing: read subscription from Stripe: %w", err)
	}
	raw, err := rawJSON(sub, sub.LastResponse)
	if err != nil {
		return subscriptionView{}, time.Time{}, err
	}
	v, err := readSubscription(raw)
	if err != nil {
		return subscriptionView{}, time.Time{}, fmt.Errorf("billing: read subscription from Stripe: %w", err)
	}
	return v, start, nil
}

// rawJSON returns the JSON Stripe sent for v: the response body when the
// client kept it, else v encoded again (which holds only what stripe-go
// models).
func rawJSON(v any, resp *stripe.APIResponse) ([]byte, error) {
	if resp != nil && len(resp.RawJSON) > 0 {
		return resp.RawJSON, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("billing: encode Stripe object: %w", err)
	}
	return b, nil
}

// snapshot turns a subscription into a fact: the tier is the plan whose
// price is on one of its items (the first such item), the period the
// subscription's or, in API versions from basil on, that item's; the
// metered item is the one whose price is that plan's (or any plan's)
// metered price. Tier and Period are empty when no item has a configured
// plan's price.
func (l *Lifecycle) snapshot(sub subscriptionView, at time.Time, eventID string) SubscriptionFact {
	f := SubscriptionFact{At: at, EventID: eventID, ID: sub.ID, CustomerID: sub.CustomerID, Status: sub.Status}
	var plan Plan
	for _, it := range sub.Items {
		if p, ok := l.cfg.Plans.ByPriceID(it.PriceID); ok {
			plan, f.Tier, f.PriceID = p, p.Tier, it.PriceID
			break
		}
	}
	if f.Tier == "" {
		return f
	}
	f.Period = sub.periodFor(plan.PriceID)
	for _, it := range sub.Items {
		if (plan.MeteredPriceID != "" && it.PriceID == plan.MeteredPriceID) ||
			(plan.MeteredPriceID == "" && f.MeteredItemID == "" && l.cfg.Plans.IsMeteredPrice(it.PriceID)) {
			f.MeteredItemID = it.ID
		}
	}
	return f
}
