package billing

import (
	"errors"
	"fmt"
)

// Errors returned by billing, possibly wrapped with detail: test for them
// with errors.Is.
var (
	// ErrNotFound is returned when a subject or customer has no entitlement.
	ErrNotFound = errors.New("billing: not found")
	// ErrInvalidSubject is returned (wrapped) for a subject that breaks
	// billkit's one subject rule: 1 to 200 bytes of valid UTF-8 without
	// '{', '}' or control characters.
	ErrInvalidSubject = errors.New("billing: invalid subject")
	// ErrConflict is returned by [EntitlementStore.Update] when the
	// entitlement kept changing under it and the update gave up.
	ErrConflict = errors.New("billing: concurrent update conflict")
	// ErrInvalidConfig is returned (wrapped, naming the field or the
	// environment variable) by the constructors and the plan parsers when
	// a required dependency is missing, a setting is out of range or a
	// plan is invalid.
	ErrInvalidConfig = errors.New("billing: invalid config")
	// ErrUnreadable reports a Stripe event about one of billkit's
	// subscriptions from which the lifecycle could not read what it needs
	// (a period, a configured plan's price, a subscription): the event is
	// refused, never applied with a guess. See [EventError].
	ErrUnreadable = errors.New("billing: event object lacks what billkit needs")
	// ErrUnmapped reports a Stripe event whose customer was not linked to
	// a subject within Config.ParkFor, or that could not be parked. See
	// [EventError].
	ErrUnmapped = errors.New("billing: event of a customer linked to no subject")
	// errParkFull is returned by a parking store whose bound on parked
	// events is reached.
	errParkFull = errors.New("billing: too many parked events")
)

// EventError is a Stripe event the lifecycle did not apply and that needs
// attention. [Lifecycle.HandleEvent] returns it (so that Stripe delivers
// the event again) for an event that is [ErrUnreadable]; the lifecycle
// logs it at ERROR and passes it to Config.OnEventError, also for a parked
// event dropped as [ErrUnmapped].
type EventError struct {
	// EventID, EventType and APIVersion identify the event.
	EventID, EventType, APIVersion string
	// Err wraps ErrUnreadable or ErrUnmapped and says what is missing.
	Err error
}

// Error describes the event and what is wrong with it; it holds no
// payload.
func (e *EventError) Error() string {
	return fmt.Sprintf("event %s (%s, API version %s): %v", e.EventID, e.EventType, e.APIVersion, e.Err)
}

// Unwrap returns Err.
func (e *EventError) Unwrap() error { return e.Err }
