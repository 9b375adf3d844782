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
// Use an event observation's Outcome and EventType, and a changed
// entitlement's Tier and Status, as metric labels, never a subject,
// customer or event ID: those are unbounded.
type Observer struct {
	// Event is called once for every event [Lifecycle.HandleEvent] is
	// given, and once for every parked event the sweep drops as
	// [ErrUnmapped].
	Event func(ctx context.Context, o EventObservation)
	// Changed is called after an event, a reconciliation or a link
	// changed an entitlement, with the entitlement before and after, like
	// Config.OnChange.
	Changed func(ctx context.Context, before, after Entitlement)
	// Reconciled is called after every [Lifecycle.Reconcile].
	Reconciled func(ctx context.Context, o ReconcileObservation)
}

// ReconcileObservation is the outcome of one [Lifecycle.Reconcile].
type ReconcileObservation struct {
	// Report is what Reconcile returned.
	Report ReconcileReport
	// Duration is how long it took.
	Duration time.Duration
	// Err is the error Reconcile returned; nil when it listed every
	// subscription.
	Err error
}

// EventOutcome is what the lifecycle did with an event.
type EventOutcome uint8

// Outcomes of [EventObservation].
const (
	// EventApplied: the event changed an entitlement.
	EventApplied EventOutcome = iota + 1
	// EventUnchanged: the event was read and changed nothing (a duplicate, or
	// older than what the entitlement already holds).
	EventUnchanged
	// EventIgnored: the event is not the lifecycle's: another type, another
	// product's subscription, a checkout that is not billkit's.
	EventIgnored
	// EventParked: the event's customer is linked to no subject yet; its facts
	// wait for the link.
	EventParked
	// EventRefused: the event lacks what billkit needs ([ErrUnreadable]); it
	// was refused, so Stripe delivers it again.
	EventRefused
	// EventUnmapped: a parked event was dropped, its customer linked to no
	// subject within Config.ParkFor, or it could not be parked
	// ([ErrUnmapped]).
	EventUnmapped
	// EventFailed: the store or Stripe failed; the event is retried.
	EventFailed
)

var eventOutcomeNames = [...]string{
	EventApplied:   "applied",
	EventUnchanged: "unchanged",
	EventIgnored:   "ignored",
	EventParked:    "parked",
	EventRefused:   "refused",
	EventUnmapped:  "unmapped",
	EventFailed:    "failed",
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
	// Duration is how long HandleEvent took; 0 for a dropped parked
	// event.
	Duration time.Duration
	// Err is the error HandleEvent returned (EventRefused, EventUnmapped,
	// EventFailed), or the [*EventError] of a dropped parked event; nil
	// otherwise. Its message may name a customer: it is for traces and
	// logs, never a label.
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
		return EventRefused
	case errors.Is(err, ErrUnmapped):
		return EventUnmapped
	case err != nil:
		return EventFailed
	case t.changed:
		return EventApplied
	case t.parked:
		return EventParked
	case t.written:
		return EventUnchanged
	default:
		return EventIgnored
	}
}
