package quota

import (
	"context"
	"time"
)

// Observer receives the outcome of every request the middleware meters and
// of every settle and refund it sends afterwards, for metrics and traces
// (the module github.com/billkit/billkit/otel turns them into
// OpenTelemetry instruments). Each func is optional: a nil func is not
// called and costs nothing (no clock is read for it, nothing is
// allocated). Decided runs synchronously on the request's goroutine and
// Background on the goroutine of the settle or refund, so they must be
// quick, and they must be safe for concurrent use.
//
// An observation carries no subject: use its fields as metric labels
// ([Observation.Plan] and [Observation.Meter] are bounded by the
// configuration), and [Config.OnDeny] or [Config.OnSoftLimit] for what
// concerns one customer.
type Observer struct {
	// Decided is called once for every request that reaches the
	// middleware, after the outcome is known and before the response is
	// written (or the next handler runs).
	Decided func(ctx context.Context, o Observation)
	// Background is called when a settle or refund that the middleware
	// sent after a response ends.
	Background func(ctx context.Context, b BackgroundObservation)
}

// Outcome is what the middleware did with a request.
type Outcome uint8

// Outcomes of [Observation].
const (
	// Allowed: the request was counted and passed on.
	Allowed Outcome = iota + 1
	// Denied: a meter's hard limit refused the request (402).
	Denied
	// NoPlan: the subject has no plan (402).
	NoPlan
	// Unavailable: no decision within the deadline, request refused (503,
	// fail-closed).
	Unavailable
	// FailOpen: no decision within the deadline, request passed on
	// uncounted ([Config.FailOpen]).
	FailOpen
	// Unauthenticated: the request identifies no subject (401).
	Unauthenticated
	// Failed: the server could not meter the request: a cost or estimate
	// function failed, or the subject cannot be stored (500).
	Failed
)

var outcomeNames = [...]string{
	Allowed:         "allowed",
	Denied:          "denied",
	NoPlan:          "no_plan",
	Unavailable:     "unavailable",
	FailOpen:        "fail_open",
	Unauthenticated: "unauthenticated",
	Failed:          "failed",
}

// String returns the outcome's name in snake case, such as "allowed" or
// "fail_open", fit for a metric label.
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) && outcomeNames[o] != "" {
		return outcomeNames[o]
	}
	return "unknown"
}

// Observation is the outcome of metering one request.
type Observation struct {
	// Outcome is what the middleware did.
	Outcome Outcome
	// Status is the response's status code when the middleware answered
	// (401, 402, 500, 503; a Denied request's is 402 even when
	// [Config.Deny] writes another), 0 when the request was passed on.
	Status int
	// Plan is the subject's plan ([Limits.Plan]) for Meter; empty when
	// the limits source gave none (Unauthenticated, NoPlan, a failed cost or
	// estimate function, a limits source that failed).
	Plan string
	// Meter is the meter that decided: the exhausted meter when Denied,
	// the reserved meter whose estimate failed when that is why the
	// request Failed, else [Config.Meter].
	Meter string
	// SoftLimitCrossed reports that this request crossed the request
	// meter's soft limit ([Decision.SoftLimitCrossed]).
	SoftLimitCrossed bool
	// Duration is the time spent deciding: the limits source and the
	// store call; 0 when no decision was attempted (Unauthenticated, a
	// failed cost or estimate function).
	Duration time.Duration
	// Err is why no decision was made (Unavailable, FailOpen, Failed);
	// nil otherwise. It is for traces and logs, never a label.
	Err error
}

// BackgroundObservation is the outcome of one settle or refund sent after
// a response, or of one resolution a store sends by itself.
type BackgroundObservation struct {
	// Op is "settle" or "refund" (from the middleware), or "resolve"
	// (from a [RedisStore]'s own resolution of a lost take; see
	// [RedisOptions.Background]).
	Op string
	// Duration is how long the store call took.
	Duration time.Duration
	// Err is nil when the store call succeeded. A failed settle leaves
	// the reservation to expire (its units are not billed); a failed
	// refund may leave a refused request's units counted.
	Err error
}
