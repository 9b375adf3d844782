package webhook

import (
	"context"
	"time"
)

// ClaimStatus is the outcome of [Store.Claim]. The zero value is no outcome:
// a Store never returns it with a nil error, and the [Handler] answers 503
// if one does.
type ClaimStatus int

const (
	// Claimed means the caller now holds the event's lease and must run its
	// handlers, then call [Store.Complete] or [Store.Release] with the
	// claim's token.
	Claimed ClaimStatus = iota + 1
	// Done means the event was already handled successfully and its record
	// is still retained: the delivery is a duplicate and is acknowledged.
	Done
	// InFlight means another delivery holds an unexpired lease on the event.
	// The handler answers 409 so that Stripe delivers it again later.
	InFlight
)

// String returns "claimed", "done" or "in_flight", and "unknown" for any
// other value.
func (s ClaimStatus) String() string {
	switch s {
	case Claimed:
		return "claimed"
	case Done:
		return "done"
	case InFlight:
		return "in_flight"
	default:
		return "unknown"
	}
}

// Claim is the result of [Store.Claim]. The zero value, with no status, is
// what a Store returns alongside an error.
type Claim struct {
	// Status says whether the caller holds the lease.
	Status ClaimStatus
	// Token identifies this holder's lease when Status is [Claimed] and is
	// empty otherwise. It fences the holder: once the lease has expired and
	// another delivery has claimed the event, the old token no longer
	// completes or releases anything.
	Token string
}

// Store records which events have been handled, so that each event ID takes
// effect once across duplicate, concurrent and retried deliveries and across
// crashes. The protocol is a claim with a lease:
//
//   - [Store.Claim] either grants a lease of the given length (status
//     [Claimed], with a fresh token), or reports the event [Done] (a record
//     kept for its retention) or [InFlight] (another unexpired lease).
//     An expired lease counts as no lease: a holder that died without
//     completing or releasing is replaced after its lease.
//   - [Store.Complete] turns the caller's lease into a done record that
//     lasts for retention.
//   - [Store.Release] drops the caller's lease so that the next delivery
//     claims the event again.
//
// Complete and Release return [ErrLeaseLost] (possibly wrapped) when token
// does not hold the event's current lease, and change nothing then. Any
// other error is a failure of the store (unreachable, context ended).
//
// Every record a Store writes must expire: a lease after its lease duration,
// a done record after its retention.
//
// Implementations must be safe for concurrent use. The package doc explains
// how to implement Store on a SQL database in the same transaction as the
// business change; [github.com/billkit/billkit/webhook/webhooktest.TestStore]
// is the conformance suite every implementation should pass.
type Store interface {
	Claim(ctx context.Context, eventID string, lease time.Duration) (Claim, error)
	Complete(ctx context.Context, eventID, token string, retention time.Duration) error
	Release(ctx context.Context, eventID, token string) error
}
