package billing

import (
	"context"
	"errors"
	"time"
)

// Observer receives the lifecycle's outcomes, for metrics and traces (the
// module github.com/billkit/billkit/otel turns them into OpenTelemetry
// instruments). Each func is optional: a nil func is not called. They run
// synchronously, so they must be quick, and they must be safe for
// concurrent use.
//
// Use an observation's Outcome, EventType, Tier and Status as metric
// labels, never a subject, customer or event ID: those are unbounded.
type Observer struct {
	// Event is called once for every event [Lifecycle.HandleEvent] is
	// given, and once for every parked event the sweep drops as
	// [ErrUnmapped].
	Event func(ctx context.Context, o EventObservation)
	// Changed is called after an event, a reconciliation or a link
	// changed an entitlement, like Config.OnChange.
	Changed func(ctx context.Context, before, after Entitlement)
	// Reconciled is called after every [Lifecycle.Reconcile], with its
	// report and error.
	Reconciled func(ctx context.Context, rep ReconcileReport, took time.Duration, err error)
}

// EventOutcome is what the lifecycle did with an event.
type EventOutcome uint8

// Outcomes of [EventObservation].
const (
	// Applied: the event changed an entitlement.
	Applied EventOutcome = iota + 1
	// Unchanged: the event was read and changed nothing (a duplicate, or
	// older than what the entitlement already holds).
	Unchanged
	// Ignored: the event is not the lifecycle's: another type, another
	// product's subscription, a checkout that is not billkit's.
	Ignored
	// Parked: the event's customer is linked to no subject yet; its facts
	// wait for the link.
	Parked
	// Refused: the event lacks what billkit needs ([ErrUnreadable]); it
	// was refused, so Stripe delivers it again.
	Refused
	// Unmapped: a parked event was dropped, its customer linked to no
	// subject within Config.ParkFor, or it could not be parked
	// ([ErrUnmapped]).
	Unmapped
	// Failed: the store or Stripe failed; the event is retried.
	Failed
)

var eventOutcomeNames = [...]string{
	Applied:   "applied",
	Unchanged: "unchanged",
	Ignored:   "ignored",
	Parked:    "parked",
	Refused:   "refused",
	Unmapped:  "unmapped",
	Failed:    "failed",
}

// String returns the outcome's name in snake case, such as "applied",
// fit for a metric label.
func (o EventOutcome) String() string {
	if int(o) < len(eventOutcomeNames) && eventOutcomeNames[o] != "" {
		return eventOutcomeNames[o]
	}
	return "unknown"
}

// EventObservation is the outcome of one event.
type EventObservation struct {
	// Outcome is what the lifecycle did.
	Outcome EventOutcome
	// EventID, EventType and APIVersion identify the event.
	EventID, EventType, APIVersion string
	// Err is the error HandleEvent returned (Refused, Unmapped, Failed),
	// or the [*EventError] of a dropped parked event; nil otherwise.
	Err error
}

// eventTrack records, for one HandleEvent call, whether the event changed
// an entitlement or was parked. It travels in the context, and only when
// Observer.Event is set.
type eventTrack struct {
	written, changed, parked bool
}

type trackKey struct{}

// trackOf returns ctx's eventTrack, or nil.
func trackOf(ctx context.Context) *eventTrack {
	t, _ := ctx.Value(trackKey{}).(*eventTrack)
	return t
}

// eventOutcome classifies the result of HandleEvent.
func eventOutcome(t *eventTrack, err error) EventOutcome {
	switch {
	case errors.Is(err, ErrUnreadable):
		return Refused
	case errors.Is(err, ErrUnmapped):
		return Unmapped
	case err != nil:
		return Failed
	case t.changed:
		return Applied
	case t.parked:
		return Parked
	case t.written:
		return Unchanged
	default:
		return Ignored
	}
}
