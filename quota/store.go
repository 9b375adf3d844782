package quota

import (
	"context"
	"fmt"
	"time"
)

// Store keeps usage counters: one per subject, meter and period. A Store
// decides and counts in one atomic step, so concurrent requests for one
// subject never over-admit.
//
// Implementations must be safe for concurrent use. Errors mean the store
// could not decide (for example Redis is unreachable or the context ended);
// a denial is a [TakeResult], not an error.
type Store interface {
	// Take checks req against its limit and, when allowed, adds req.Cost to
	// the period's billable counter; a denied request adds req.Cost to the
	// period's denied counter instead (denied units are never billable).
	// The counter expires no earlier than req.ExpireAt.
	Take(ctx context.Context, req TakeRequest) (TakeResult, error)

	// Usage returns the counters of subject's meter for period, for the
	// current period and for closed periods alike, until their expiry has
	// passed. A counter that does not exist reads as zero.
	Usage(ctx context.Context, subject, meter string, period Period) (Usage, error)
}

// TakeRequest is one metering decision.
//
// Its zero value is not a valid request (it has no subject); every field
// below says what its own zero value means.
type TakeRequest struct {
	// Subject is who is metered; see [ErrInvalidSubject] for the rule.
	Subject string
	// Meter names what is counted; see [ErrInvalidMeter] for the rule.
	Meter string
	// Period is the counting period; it must not be empty.
	Period Period
	// Cost is the number of units the request uses; it must be positive.
	Cost int64
	// Limit is the hard limit: the request is allowed only if the period's
	// billable count plus Cost stays at or below Limit. Zero allows
	// nothing: every request is denied and its cost counted as denied. It
	// must be zero when Unlimited is set.
	Limit int64
	// Unlimited lifts the hard limit: every request is allowed and
	// counted. The zero value (false) means Limit applies.
	Unlimited bool
	// ExpireAt is when the counter may expire: the period's end plus the
	// retention that lets the billing package report it.
	ExpireAt time.Time
}

// TakeResult is the outcome of [Store.Take]. Its zero value is a denial
// with nothing counted.
type TakeResult struct {
	// Allowed reports whether the request was admitted and counted.
	Allowed bool
	// Used is the period's billable count after this decision.
	Used int64
}

// Usage is the state of one counter. Its zero value is a counter with
// nothing counted, which is also what a missing counter reads as.
type Usage struct {
	// Used is the billable count: the units of allowed requests.
	Used int64
	// Denied is the units of denied requests, kept apart from Used.
	Denied int64
}

// validate reports whether req can be taken: a valid subject and meter, a
// positive cost, a non-negative limit (zero when unlimited), a non-empty
// period and an expiry no earlier than the period's end (so a counter
// cannot vanish before its period could be reported).
func (req *TakeRequest) validate() error {
	if err := checkSubject(req.Subject); err != nil {
		return err
	}
	if err := validMeter(req.Meter); err != nil {
		return err
	}
	if req.Cost <= 0 {
		return ErrInvalidCost
	}
	if req.Limit < 0 {
		return fmt.Errorf("%w: negative limit", ErrInvalidRequest)
	}
	if req.Unlimited && req.Limit != 0 {
		return fmt.Errorf("%w: limit set on an unlimited request", ErrInvalidRequest)
	}
	if !req.Period.End.After(req.Period.Start) {
		return fmt.Errorf("%w: empty period", ErrInvalidRequest)
	}
	if req.ExpireAt.Before(req.Period.End) {
		return fmt.Errorf("%w: expiry before the period's end", ErrInvalidRequest)
	}
	return nil
}

// validateUsage reports whether a Usage query's names are valid.
func validateUsage(subject, meter string) error {
	if err := checkSubject(subject); err != nil {
		return err
	}
	return validMeter(meter)
}
