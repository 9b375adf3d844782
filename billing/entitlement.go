package billing

import (
	"context"
	"encoding/json"
	"time"

	"github.com/billkit/billkit/quota"
)

// Status is the state of a subject's entitlement, following the Stripe
// subscription lifecycle.
type Status string

// Entitlement statuses. StatusNone is the zero value.
const (
	StatusNone              Status = ""
	StatusPending           Status = "pending" // checkout completed, not yet paid
	StatusActive            Status = "active"
	StatusTrialing          Status = "trialing"
	StatusPastDue           Status = "past_due"
	StatusUnpaid            Status = "unpaid"
	StatusIncomplete        Status = "incomplete"
	StatusIncompleteExpired Status = "incomplete_expired"
	StatusPaused            Status = "paused"
	StatusCanceled          Status = "canceled"
)

// Terminal reports whether s is a final state of a subscription (canceled or
// incomplete_expired): Stripe never revives such a subscription, and the
// Redis store lets such an entitlement expire after its retention.
func (s Status) Terminal() bool {
	return s == StatusCanceled || s == StatusIncompleteExpired
}

// Entitlement is what one subject is entitled to, as last learned from
// Stripe.
//
// The fields above Sources are derived from Sources by the lifecycle
// handlers; read them, and leave Sources to the lifecycle.
type Entitlement struct {
	// Subject is the account of the application the entitlement is for.
	Subject string `json:"subject"`
	// Tier is the plan's tier, from the subscription's licensed price.
	Tier string `json:"tier,omitempty"`
	// Status is the entitlement's state; see [Limits] for what each
	// grants.
	Status Status `json:"status"`

	// CustomerID is the subject's Stripe customer.
	CustomerID string `json:"customer_id,omitempty"`
	// SubscriptionID is the Stripe subscription the entitlement follows.
	SubscriptionID string `json:"subscription_id,omitempty"`
	// MeteredItemID is the subscription item of the plan's metered price
	// (the first metered price of its meters), to which usage records are
	// reported.
	MeteredItemID string `json:"metered_item_id,omitempty"`
	// MeteredItems are the subscription's items of every configured
	// metered price, by price ID: the item each meter's usage records are
	// reported to. Nil when the subscription has none (and in
	// entitlements stored before billkit kept it).
	MeteredItems map[string]string `json:"metered_items,omitempty"`

	// Period is the subscription's current billing period.
	Period quota.Period `json:"period"`
	// PreviousPeriod is the billing period before Period, kept so that its
	// usage can still be reported after the subscription renewed. It is
	// zero until a renewal has been seen.
	PreviousPeriod quota.Period `json:"previous_period"`
	// PreviousTier is the tier PreviousPeriod ended on (the tier of the
	// newest subscription snapshot of that period), for reporting its
	// overage against that plan's included units; empty when unknown.
	PreviousTier string `json:"previous_tier,omitempty"`

	// GraceUntil is when a past_due subject's grace access ends; zero when
	// the subject is not past_due or its grace policy suspends at once.
	GraceUntil time.Time `json:"grace_until,omitempty"`
	// GraceTier is the tier whose limits a past_due subject has until
	// GraceUntil (its own tier, or a lower one when the grace policy
	// downgrades).
	GraceTier string `json:"grace_tier,omitempty"`
	// StripeFeatures are the lookup keys of the features Stripe
	// Entitlements lists as active for CustomerID, sorted, from the newest
	// entitlements.active_entitlement_summary.updated event (see
	// [Lifecycle.HasFeature]). Nil when there is none.
	StripeFeatures []string `json:"stripe_features,omitempty"`
	// LastEventAt is the creation time of the newest Stripe event applied.
	LastEventAt time.Time `json:"last_event_at,omitempty"`
	// UpdatedAt is when the entitlement was last written.
	UpdatedAt time.Time `json:"updated_at,omitempty"`

	// sources are the newest facts learned from each kind of Stripe event.
	// The fields above are a pure function of them, which is what makes
	// the result independent of the order events arrive in. They are
	// stored with the entitlement (JSON key "sources") but are not part of
	// its API.
	sources sources
}

// entitlementJSON is the stored form of an Entitlement: its fields and its
// sources.
type entitlementJSON struct {
	*entitlementFields
	Sources *sources `json:"sources"`
}

// entitlementFields is Entitlement without its methods, so that encoding it
// does not recurse into MarshalJSON.
type entitlementFields Entitlement

// MarshalJSON encodes e as it is stored, with the facts it is derived from.
func (e Entitlement) MarshalJSON() ([]byte, error) {
	return json.Marshal(entitlementJSON{(*entitlementFields)(&e), &e.sources})
}

// UnmarshalJSON decodes an entitlement as MarshalJSON stores it.
func (e *Entitlement) UnmarshalJSON(b []byte) error {
	var v Entitlement
	if err := json.Unmarshal(b, &entitlementJSON{(*entitlementFields)(&v), &v.sources}); err != nil {
		return err
	}
	*e = v
	return nil
}

// sources are the facts an entitlement is derived from: the newest
// subscription snapshot, the newest invoice outcome, the newest completed
// checkout and the newest Stripe Entitlements summary, each stamped with the
// Stripe event that carried it.
type sources struct {
	Subscription subscriptionFact `json:"subscription"`
	Invoice      invoiceFact      `json:"invoice"`
	Checkout     checkoutFact     `json:"checkout"`
	Features     *featuresFact    `json:"features,omitempty"`
}

// subscriptionFact is a snapshot of a Stripe subscription.
type subscriptionFact struct {
	// At is the creation time of the event that carried the snapshot (or,
	// for a snapshot read from the API, when the read began, less one
	// second).
	At time.Time `json:"at,omitempty"`
	// EventID is the event's ID; it breaks ties between snapshots of equal
	// At, Period and status.
	EventID       string `json:"event_id,omitempty"`
	ID            string `json:"id,omitempty"`
	CustomerID    string `json:"customer_id,omitempty"`
	Status        Status `json:"status,omitempty"`
	Tier          string `json:"tier,omitempty"`
	PriceID       string `json:"price_id,omitempty"`
	MeteredItemID string `json:"metered_item_id,omitempty"`
	// MeteredItems maps every configured metered price among the
	// subscription's items to its item.
	MeteredItems   map[string]string `json:"metered_items,omitempty"`
	Period         quota.Period      `json:"period"`
	PreviousPeriod quota.Period      `json:"previous_period"`
	// PreviousTier and PreviousAt are the tier and event time of the
	// newest snapshot whose Period was PreviousPeriod.
	PreviousTier string    `json:"previous_tier,omitempty"`
	PreviousAt   time.Time `json:"previous_at,omitempty"`
}

// invoiceFact is the outcome of the newest payment attempt of a
// subscription's invoice.
type invoiceFact struct {
	At             time.Time `json:"at,omitempty"`
	EventID        string    `json:"event_id,omitempty"`
	ID             string    `json:"id,omitempty"`
	SubscriptionID string    `json:"subscription_id,omitempty"`
	CustomerID     string    `json:"customer_id,omitempty"`
	Paid           bool      `json:"paid,omitempty"`
	// FinalizedAt is when the invoice was finalized: the first payment
	// attempt, from which a grace period is counted.
	FinalizedAt time.Time    `json:"finalized_at,omitempty"`
	Tier        string       `json:"tier,omitempty"`
	Period      quota.Period `json:"period"`
}

// checkoutFact is a completed Checkout Session.
type checkoutFact struct {
	At             time.Time `json:"at,omitempty"`
	EventID        string    `json:"event_id,omitempty"`
	SessionID      string    `json:"session_id,omitempty"`
	CustomerID     string    `json:"customer_id,omitempty"`
	SubscriptionID string    `json:"subscription_id,omitempty"`
	Tier           string    `json:"tier,omitempty"`
}

// featuresFact is a customer's active features, as Stripe Entitlements
// summarized them (an entitlements.active_entitlement_summary, or the list
// of the customer's active entitlements read from the API).
type featuresFact struct {
	// At is the creation time of the event (for a list read from the API:
	// when the read began, less one second, if that is later).
	At         time.Time `json:"at"`
	EventID    string    `json:"event_id,omitempty"`
	CustomerID string    `json:"customer_id,omitempty"`
	// Features are the active features' lookup keys, sorted, without
	// duplicates.
	Features []string `json:"features,omitempty"`
}

// EntitlementStore keeps entitlements and the customer → subject index.
// Implementations must be safe for concurrent use.
type EntitlementStore interface {
	// Get returns subject's entitlement, or ErrNotFound.
	Get(ctx context.Context, subject string) (Entitlement, error)
	// Update reads subject's entitlement (the zero Entitlement with Subject
	// set when there is none), calls fn with it, and stores what fn left,
	// atomically: if the stored entitlement changed in between, it reads
	// again and calls fn again, so fn must have no side effects. When fn
	// returns an error, nothing is stored and Update returns that error;
	// when fn changes nothing, nothing is written. Update sets Subject and
	// UpdatedAt, indexes CustomerID → Subject, and returns the entitlement
	// as stored and whether this call changed it. It returns ErrConflict
	// after too many concurrent changes.
	Update(ctx context.Context, subject string, fn func(e *Entitlement) error) (e Entitlement, changed bool, err error)
	// SubjectByCustomer returns the subject linked to a Stripe customer, or
	// ErrNotFound.
	SubjectByCustomer(ctx context.Context, customerID string) (string, error)
	// ForEach calls fn for every stored entitlement, stopping at the first
	// error fn returns. It must scale on Redis Cluster (no KEYS, no
	// cross-slot scripts). fn is never called concurrently.
	ForEach(ctx context.Context, fn func(Entitlement) error) error
}
