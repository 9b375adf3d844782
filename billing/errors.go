package billing

import "errors"

// Errors returned by billing, possibly wrapped with detail: test for them
// with errors.Is.
var (
	// ErrNotFound is returned when a subject or customer has no entitlement.
	ErrNotFound = errors.New("billing: not found")
	// ErrStale reports that an event was older than what the entitlement
	// already reflects, so it changed nothing. The lifecycle handlers treat
	// it as success.
	ErrStale = errors.New("billing: stale event")
	// ErrConflict is returned by [EntitlementStore.Update] when the
	// entitlement kept changing under it and the update gave up.
	ErrConflict = errors.New("billing: concurrent update conflict")
	// ErrInvalidPlan is returned (wrapped, naming the field) when a plan's
	// configuration is invalid.
	ErrInvalidPlan = errors.New("billing: invalid plan")
	// ErrInvalidConfig is returned (wrapped, naming the field) by the
	// constructors when a required dependency is missing or a setting is
	// out of range.
	ErrInvalidConfig = errors.New("billing: invalid config")
	// ErrReportInvalid is returned by a [UsageSink] for a report Stripe
	// could not accept as built, such as one for a subject without a
	// Stripe customer or metered subscription item.
	ErrReportInvalid = errors.New("billing: invalid usage report")
	// ErrLeaseBusy is returned by [Reporter.Flush] when another reporter
	// kept the subject's lease for longer than the flush could wait.
	ErrLeaseBusy = errors.New("billing: usage of subject is being reported elsewhere")
	// ErrWatermarkMoved is returned when a subject's watermark changed
	// under a reporter that believed it held the subject's lease (the
	// lease expired): nothing was lost, the next pass reports the rest.
	ErrWatermarkMoved = errors.New("billing: watermark moved by another reporter")
)
