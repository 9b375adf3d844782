package billing

import (
	"context"
	"errors"
	"time"

	"github.com/billkit/billkit/quota"
)

// Errors returned by billing.
var (
	// ErrNotFound is returned when a subject or customer has no entitlement.
	ErrNotFound = errors.New("billing: not found")
	// ErrStale is returned by [EntitlementStore.Apply] when the entitlement
	// in the store was changed by a newer event than the one being applied.
	ErrStale = errors.New("billing: stale event")
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

// Entitlement is what one subject is entitled to, as last learned from
// Stripe.
type Entitlement struct {
	Subject string `json:"subject"`
	Tier    string `json:"tier,omitempty"`
	Status  Status `json:"status"`

	CustomerID     string `json:"customer_id,omitempty"`
	SubscriptionID string `json:"subscription_id,omitempty"`
	// MeteredItemID is the subscription item of the plan's metered price,
	// to which usage records are reported.
	MeteredItemID string `json:"metered_item_id,omitempty"`

	// Period is the subscription's current billing period.
	Period quota.Period `json:"period"`
	// PreviousPeriod is the billing period before Period, kept so that its
	// usage can still be reported after the subscription renewed.
	PreviousPeriod quota.Period `json:"previous_period"`

	// GraceUntil is when a past_due subject's grace access ends.
	GraceUntil time.Time `json:"grace_until,omitempty"`
	// LastEventAt is the creation time of the newest Stripe event applied.
	LastEventAt time.Time `json:"last_event_at,omitempty"`
	// UpdatedAt is when the entitlement was last written.
	UpdatedAt time.Time `json:"updated_at,omitempty"`
}

// EntitlementStore keeps entitlements and the customer → subject index.
// Implementations must be safe for concurrent use.
type EntitlementStore interface {
	// Get returns subject's entitlement, or ErrNotFound.
	Get(ctx context.Context, subject string) (Entitlement, error)
	// Apply stores e unless the stored entitlement's LastEventAt is after
	// e.LastEventAt, in which case it returns ErrStale and changes nothing.
	// It also indexes e.CustomerID → e.Subject.
	Apply(ctx context.Context, e Entitlement) error
	// SubjectByCustomer returns the subject linked to a Stripe customer, or
	// ErrNotFound.
	SubjectByCustomer(ctx context.Context, customerID string) (string, error)
	// ForEach calls fn for every stored entitlement, stopping at the first
	// error fn returns. It must scale on Redis Cluster (no KEYS, no
	// cross-slot scripts).
	ForEach(ctx context.Context, fn func(Entitlement) error) error
}
