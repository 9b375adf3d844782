package webhook

import (
	"context"
	"time"
)

// Observer receives every delivery's outcome, for metrics and traces (the
// module github.com/billkit/billkit/otel turns them into OpenTelemetry
// instruments and spans). Each func is optional: a nil func is not called.
// They run synchronously on the delivery's goroutine, so they must be
// quick, and they must be safe for concurrent use.
//
// A [Delivery] carries the event's ID for traces and logs; use only its
// Outcome, Status and EventType as metric labels (an event type is one of
// Stripe's, since it is read only from a verified payload).
type Observer struct {
	// Start is called when a delivery arrives, before anything is read.
	// The context it returns is the delivery's from then on: the event's
	// handlers run under it (detached from the request's cancellation)
	// and Done receives it, so a tracing span started here parents the
	// spans of the handlers' Stripe and Redis calls. A nil Start keeps
	// the request's context.
	Start func(ctx context.Context) context.Context
	// Done is called once per delivery, with its outcome, before the
	// response is written.
	Done func(ctx context.Context, d Delivery)
}

// Outcome is what the handler did with a delivery.
type Outcome uint8

// Outcomes of [Delivery].
const (
	// Handled: the event's handlers succeeded (200).
	Handled Outcome = iota + 1
	// Duplicate: the event was handled by an earlier delivery (200).
	Duplicate
	// Ignored: no handler is registered for the event's type (200).
	Ignored
	// InFlightElsewhere: another delivery of the event holds its claim
	// (409).
	InFlightElsewhere
	// HandlerFailed: a handler returned an error or panicked (500); Stripe
	// delivers the event again.
	HandlerFailed
	// StoreFailed: the idempotency store could not claim the event (503);
	// Stripe delivers it again.
	StoreFailed
	// BadSignature: the Stripe-Signature header is missing or malformed,
	// or no secret's signature matches the payload (400).
	BadSignature
	// Stale: the signature's timestamp is outside the tolerance (400).
	Stale
	// Malformed: the body is signed but is not an event this endpoint
	// accepts: not JSON, no id or type, another API version under
	// Config.StrictAPIVersion, or unreadable (400).
	Malformed
	// TooLarge: the body exceeds Config.MaxBodyBytes (413).
	TooLarge
	// BadMethod: the request is not a POST (405).
	BadMethod
)

var outcomeNames = [...]string{
	Handled:           "handled",
	Duplicate:         "duplicate",
	Ignored:           "ignored",
	InFlightElsewhere: "in_flight",
	HandlerFailed:     "handler_failed",
	StoreFailed:       "store_failed",
	BadSignature:      "bad_signature",
	Stale:             "stale",
	Malformed:         "malformed",
	TooLarge:          "too_large",
	BadMethod:         "bad_method",
}

// String returns the outcome's name in snake case, such as "handled" or
// "bad_signature", fit for a metric label.
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) && outcomeNames[o] != "" {
		return outcomeNames[o]
	}
	return "unknown"
}

// Delivery is the outcome of one webhook delivery.
type Delivery struct {
	// Outcome is what the handler did.
	Outcome Outcome
	// Status is the response's HTTP status code.
	Status int
	// EventID, EventType and APIVersion identify the event; empty when
	// the delivery was rejected before its payload was verified and read.
	EventID, EventType, APIVersion string
	// Duration is the time from the delivery's arrival to its outcome.
	Duration time.Duration
	// Err is why a delivery failed or was rejected; nil for Handled,
	// Duplicate and Ignored. A rejection's error holds no payload or
	// secret; a failure's is the handler's or the store's error, which
	// may say anything they say (a customer ID, say). It is for traces
	// and logs, never a label.
	Err error
}
