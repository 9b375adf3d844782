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

// The metadata keys that link Stripe objects to a subject: those the
// checkout package writes on Checkout Sessions and, through
// subscription_data.metadata, on the subscriptions they create.
const (
	metaSubject = checkout.MetadataSubject
	metaTier    = checkout.MetadataTier
)

// Config configures a [Lifecycle]. Store and Plans are required; every other
// zero field means its documented default.
type Config struct {
	// Store keeps the entitlements. Required.
	Store EntitlementStore
	// Plans maps subscription prices to tiers. Required.
	Plans *Plans
	// Grace decides what a past_due subject keeps. The default value is
	// KeepAccess(7 * 24 * time.Hour): 7 days of the subject's own plan.
	Grace GracePolicy
	// Stripe is the API client used by [Lifecycle.Reconcile] and, with
	// Refetch, by the event handlers. Build it with client.New and set
	// MaxNetworkRetries on its backends. Optional: without it Reconcile
	// returns ErrInvalidConfig.
	Stripe *client.API
	// Refetch makes every subscription and invoice event re-read the
	// subscription from Stripe and apply that snapshot, and every
	// Entitlements summary event list the customer's active entitlements,
	// so that the result no longer depends on the event's payload or its
	// order at all. It costs an API call per event and requires Stripe. The default value
	// is false: the event's own object is applied.
	Refetch bool
	// OnChange, when set, is called after an event, Reconcile or Link
	// changed an entitlement (the lifecycle's own limits cache is already
	// invalidated then), for example to tell other processes to call
	// [LimitsCache.Invalidate]. It must be safe for concurrent use. The
	// default value is nil.
	OnChange func(ctx context.Context, before, after Entitlement)
	// OnEventError, when set, is called for every event the lifecycle
	// refused or dropped (see [EventError]), for example to alert: an
	// event about a subscription that lacks what billkit needs, or one
	// whose customer stayed linked to no subject for ParkFor. It must be
	// safe for concurrent use. The default value is nil; such events are
	// logged at ERROR either way.
	OnEventError func(ctx context.Context, err *EventError)
	// Observer receives the outcome of every event, every entitlement
	// change and every reconciliation, for metrics and traces. The
	// default value (zero) observes nothing.
	Observer Observer
	// ParkFor is how long a parked event waits for its customer's link;
	// then the sweep of [Lifecycle.Run] drops it and reports it as
	// [ErrUnmapped]. The default value is [DefaultParkFor] (7 days).
	ParkFor time.Duration
	// LimitsTTL is how long the limits cache ([Lifecycle.Limits]) reuses
	// an entitlement read from Store: a change written by another process
	// (a revocation, a renewal) is enforced by this one within LimitsTTL
	// plus one Store read. The default value is one second.
	LimitsTTL time.Duration
	// Provisional is the allowance of a pending subject (checkout
	// completed, first invoice not yet paid), counted in its own period
	// and never billed. The zero value means 100 units per UTC day,
	// strictly capped.
	Provisional quota.Limits
	// MaxCached bounds the limits cache: past it, expired entries are
	// dropped, then (if still too many) every entry. The default value is
	// 100,000.
	MaxCached int
	// ReconcileEvery is the time between two passes of [Lifecycle.Run].
	// The default value is one hour.
	ReconcileEvery time.Duration
	// Logger receives a record for every event that changed nothing
	// (stale, unmapped or malformed) and, at ERROR, every [EventError].
	// The default value is slog.Default().
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
	switch {
	case c.ParkFor < 0, c.ReconcileEvery < 0:
		return c, fmt.Errorf("%w: ParkFor and ReconcileEvery must not be negative", ErrInvalidConfig)
	case c.ParkFor == 0:
		c.ParkFor = defaultParkFor
	}
	if c.ReconcileEvery == 0 {
		c.ReconcileEvery = time.Hour
	}
	switch {
	case c.LimitsTTL < 0:
		return c, fmt.Errorf("%w: negative LimitsTTL", ErrInvalidConfig)
	case c.MaxCached < 0:
		return c, fmt.Errorf("%w: negative MaxCached", ErrInvalidConfig)
	case c.Provisional.Included < 0 || c.Provisional.Hard < 0 || c.Provisional.Soft < 0:
		return c, fmt.Errorf("%w: Provisional: negative limit", ErrInvalidConfig)
	}
	if c.LimitsTTL == 0 {
		c.LimitsTTL = defaultLimitsTTL
	}
	if c.Provisional == (quota.Limits{}) {
		c.Provisional = defaultProvisional()
	}
	if c.MaxCached == 0 {
		c.MaxCached = defaultMaxCached
	}
	if c.Grace == nil {
		c.Grace = KeepAccess(defaultGracePeriod)
	}
	probe := c.Plans.list[0]
	if g := c.Grace(Entitlement{Tier: probe.Tier}, time.Unix(0, 0)); g.Tier != "" {
		if _, ok := c.Plans.ByTier(g.Tier); !ok {
			return c, fmt.Errorf("%w: Grace: tier %q is not in Plans", ErrInvalidConfig, g.Tier)
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
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
// entitlement's facts, keeping the newer of the stored and the incoming
// fact by the event's creation time (a subscription snapshot of an older
// event never replaces a newer one), with deterministic tie-breaks for
// events of the same second; the entitlement is then derived from the
// facts alone. So duplicates change nothing and every order of the same
// events gives the same entitlement. See the package documentation.
type Lifecycle struct {
	cfg    Config
	limits *LimitsCache
	// parking keeps the events of customers not linked to a subject yet:
	// the Store itself ([RedisStore], [MemoryStore]), or process memory
	// for another EntitlementStore.
	parking parkingStore
}

// NewLifecycle returns a lifecycle, or an error wrapping ErrInvalidConfig.
func NewLifecycle(cfg Config) (*Lifecycle, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	l := &Lifecycle{cfg: c, limits: newLimitsCache(limitsConfig{Store: c.Store, Plans: c.Plans,
		TTL: c.LimitsTTL, Provisional: c.Provisional, MaxCached: c.MaxCached, Now: c.Now})}
	if ps, ok := c.Store.(parkingStore); ok {
		l.parking = ps
	} else {
		l.parking = NewMemoryStore(MemoryOptions{Now: c.Now})
		c.Logger.Warn("billing: the entitlement store keeps no parked events; events of customers not linked to a subject yet are kept in process memory until the link appears")
	}
	return l, nil
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
	eventSummaryUpdated,
}

// Limits returns the lifecycle's limits cache, the quota middleware's
// [quota.LimitsSource]: the lifecycle drops a subject's cached limits
// whenever it changes the subject's entitlement. A process that serves
// requests but handles no webhooks builds a Lifecycle for its Limits too.
func (l *Lifecycle) Limits() *LimitsCache { return l.limits }

// Register adds the lifecycle's handlers to h for the event types listed
// in the package documentation (enable them on the Stripe webhook
// endpoint).
func (l *Lifecycle) Register(h *webhook.Handler) {
	for _, t := range lifecycleEvents {
		h.On(t, l.HandleEvent)
	}
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
	after, changed, err := l.cfg.Store.Update(ctx, subject, func(e *Entitlement) error {
		before = *e
		merge(e)
		prune(e)
		derive(e, l.cfg.Grace)
		return nil
	})
	if err != nil {
		return before, after, fmt.Errorf("billing: update entitlement: %w", err)
	}
	if t := trackOf(ctx); t != nil {
		t.written = true
		t.changed = t.changed || changed
	}
	if !changed {
		log.DebugContext(ctx, "billing: event changed nothing (duplicate or older than the entitlement)", "subject", subject)
		return before, after, nil
	}
	log.DebugContext(ctx, "billing: entitlement updated", "subject", subject, "status", string(after.Status), "tier", after.Tier)
	l.limits.Invalidate(subject)
	if l.cfg.OnChange != nil {
		l.cfg.OnChange(ctx, before, after)
	}
	if l.cfg.Observer.Changed != nil {
		l.cfg.Observer.Changed(ctx, before, after)
	}
	return before, after, nil
}

// subjectOf maps an object to its subject: the metadata's billkit_subject,
// else the customer index. It returns "" (and no error) for neither.
func (l *Lifecycle) subjectOf(ctx context.Context, meta map[string]string, customer string) (string, error) {
	if s := meta[metaSubject]; s != "" {
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
// metered items are those whose price is any plan's metered price, and the
// metered item the one of the plan's first metered price (or, when the
// plan has none, the first of any plan's). Tier and Period are empty when
// no item has a configured plan's price.
func (l *Lifecycle) snapshot(sub subscriptionView, at time.Time, eventID string) subscriptionFact {
	f := subscriptionFact{At: at, EventID: eventID, ID: sub.ID, CustomerID: sub.CustomerID, Status: sub.Status}
	var plan Plan
	for _, it := range sub.Items {
		if p, ok := l.cfg.Plans.byPriceID(it.PriceID); ok {
			plan, f.Tier, f.PriceID = p, p.Tier, it.PriceID
			break
		}
	}
	if f.Tier == "" {
		return f
	}
	f.Period = sub.periodFor(plan.PriceID)
	metered := plan.meteredPrice()
	for _, it := range sub.Items {
		if !l.cfg.Plans.isMeteredPrice(it.PriceID) {
			continue
		}
		if f.MeteredItems == nil {
			f.MeteredItems = map[string]string{}
		}
		if _, dup := f.MeteredItems[it.PriceID]; !dup {
			f.MeteredItems[it.PriceID] = it.ID
		}
		if (metered != "" && it.PriceID == metered) || (metered == "" && f.MeteredItemID == "") {
			f.MeteredItemID = it.ID
		}
	}
	return f
}
