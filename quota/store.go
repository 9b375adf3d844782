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
// could not decide or write (for example Redis is unreachable or the
// context ended); a denial is a [TakeResult], not an error. An error from
// Take does not say that nothing was counted: the store may have counted
// the take before the error (a reply lost to a deadline), which is what
// [Store.Refund] is for.
type Store interface {
	// Take checks req against its limits and, when every meter of req
	// fits, adds req.Cost to the request meter's billable counter and
	// holds every [Hold] of req.Reserve; when one meter does not fit,
	// nothing becomes billable or held, and every meter's amount goes to
	// its denied counter instead (denied units are never billable).
	// Counters expire no earlier than their ExpireAt. A take whose ID was
	// used or refunded before returns [ErrDuplicateTake] and counts
	// nothing.
	Take(ctx context.Context, req TakeRequest) (TakeResult, error)

	// Settle ends the holds of req, a take that was allowed: for each
	// req.Reserve[i] it releases the hold (unless it has expired, and
	// was released then) and adds used[i] (zero or more) to that
	// meter's billable counter, whatever its limit. len(used) must be
	// len(req.Reserve). Settle is not idempotent: calling it twice for
	// one take counts twice.
	Settle(ctx context.Context, req TakeRequest, used []int64) error

	// Refund undoes req, a take whose outcome is unknown (its call
	// failed after it may have reached the store): if the take ran, its
	// billable units, its holds and its denied units are given back; if
	// it has not run yet, Refund leaves a tombstone so that it counts
	// nothing (and fails with [ErrDuplicateTake]) when it does. req must
	// be the request given to Take, with its ID; a take is remembered
	// for a window of the store's (a minute by default), after which
	// Refund no longer finds it. A second Refund of one take changes
	// nothing. Refund does not undo a [Store.Settle].
	Refund(ctx context.Context, req TakeRequest) error

	// Usage returns the counters of subject's meter for period, for the
	// current period and for closed periods alike, until their expiry has
	// passed. A counter that does not exist reads as zero.
	Usage(ctx context.Context, subject, meter string, period Period) (Usage, error)
}

// LostTakeResolver is implemented by a [Store] that resolves by itself
// the outcome of a lost take: a take without ID and without holds whose
// [Store.Take] call failed after the take may have reached the store (its
// context ended while the reply was on its way, or the connection broke).
// Once Take has returned its error, such a take counts nothing, or the
// store undoes it in the background as a [Store.Refund] would: there is
// nothing for the caller to refund. (A store that cannot reach its
// backend to undo a take says so in its own way: [RedisStore] retries for
// half its refund window, then logs it.)
//
// When its Store implements LostTakeResolver and ResolvesLostTakes
// reports true, the [Middleware] takes requests without reservations
// without an ID, and does not refund them: the store needs no record per
// request. Otherwise it gives every take an ID and refunds the takes
// whose outcome it does not know. [MemoryStore] (which never loses a
// take) and [RedisStore] on a standalone or Sentinel client with
// coalescing (the default) resolve lost takes.
type LostTakeResolver interface {
	ResolvesLostTakes() bool
}

// TakeRequest is one metering decision: a cost on the request meter and,
// optionally, holds on further meters.
//
// Its zero value is not a valid request (it has no subject); every field
// below says what its own zero value means.
type TakeRequest struct {
	// ID identifies the take: [Store.Refund] finds it by its ID, and its
	// holds are named after it. It must be unique per store (the
	// middleware draws a random prefix per [Middleware] and numbers its
	// requests) and 1 to [MaxIDLen] bytes of printable ASCII without
	// ':', '{' or '}'. The empty ID takes without a record: such a take
	// can be neither refunded nor hold units, and a store that is a
	// [LostTakeResolver] undoes it by itself when its call fails.
	ID string
	// Subject is who is metered; see [ErrInvalidSubject] for the rule.
	Subject string
	// Meter names what is counted; see [ErrInvalidMeter] for the rule.
	Meter string
	// Period is the counting period; it must not be empty.
	Period Period
	// Cost is the number of units the request uses; it must be positive.
	Cost int64
	// Limit is the hard limit: the request is allowed only if the period's
	// billable count, plus the units held by unsettled reservations of
	// the meter, plus Cost stays at or below Limit. Zero allows nothing:
	// every request is denied and its cost counted as denied. It must be
	// zero when Unlimited is set.
	Limit int64
	// Unlimited lifts the hard limit: every request is allowed and
	// counted. The zero value (false) means Limit applies.
	Unlimited bool
	// ExpireAt is when the counter may expire: the period's end plus the
	// retention that lets the billing package report it.
	ExpireAt time.Time
	// Reserve holds units of further meters, whose amount is known only
	// after the request has been served (see [Hold]). Each meter appears
	// once, and not as Meter. Holding needs an ID. The default (nil)
	// holds nothing.
	Reserve []Hold
}

// Hold is a reservation within a [TakeRequest]: units of a meter held,
// not billed, until [Store.Settle] replaces them by the units actually
// used, or until TTL has passed (the process that took them died), when
// they are released and never billed.
//
// Its zero value is not a valid hold (it has no meter).
type Hold struct {
	// Meter names the meter; see [ErrInvalidMeter] for the rule.
	Meter string
	// Period is the meter's counting period; it must not be empty.
	Period Period
	// Amount is the number of units held; it must be positive. The hold
	// fits when the period's billable count plus the units already held
	// plus Amount stays at or below Limit.
	Amount int64
	// Limit and Unlimited are the meter's hard limit, as in
	// [TakeRequest].
	Limit     int64
	Unlimited bool
	// ExpireAt is when the meter's counter may expire, as in
	// [TakeRequest].
	ExpireAt time.Time
	// TTL is how long the hold lasts when it is not settled; it must be
	// positive. It is measured by the store's clock.
	TTL time.Duration
}

// TakeResult is the outcome of [Store.Take]. Its zero value is a denial
// with nothing counted.
type TakeResult struct {
	// Allowed reports whether the request was admitted: its cost counted
	// and its holds held.
	Allowed bool
	// Used is the request meter's billable count after this decision.
	Used int64
	// Reserved is the request meter's units held by unsettled
	// reservations (of other requests) after this decision.
	Reserved int64
	// Exhausted names the meter that did not fit: the request's Meter or
	// a Hold's. It is empty when Allowed.
	Exhausted string
	// Holds are the states of the meters of [TakeRequest.Reserve] after
	// this decision, in its order; nil when it is empty.
	Holds []HoldResult
}

// HoldResult is the state of a held meter after a [Store.Take]. Its zero
// value is a meter with nothing counted or held.
type HoldResult struct {
	// Used is the meter's billable count.
	Used int64
	// Reserved is the meter's units held by unsettled reservations,
	// this take's included when it was allowed.
	Reserved int64
}

// Usage is the state of one counter. Its zero value is a counter with
// nothing counted, which is also what a missing counter reads as.
type Usage struct {
	// Used is the billable count: the units of allowed requests and of
	// settled reservations.
	Used int64
	// Denied is the units of denied requests, kept apart from Used.
	Denied int64
	// Reserved is the units held by reservations that are neither settled
	// nor expired. They are never billable: a settle turns them into Used
	// (or releases them), an expiry releases them.
	Reserved int64
}

// MaxIDLen is the longest [TakeRequest.ID], in bytes.
const MaxIDLen = 64

// validate reports whether req can be taken: a valid subject and meter, a
// positive cost, a non-negative limit (zero when unlimited), a non-empty
// period and an expiry no earlier than the period's end (so a counter
// cannot vanish before its period could be reported), a valid ID and
// valid holds on distinct meters.
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
	if err := validLimit(req.Limit, req.Unlimited, req.Period, req.ExpireAt); err != nil {
		return err
	}
	if req.ID != "" && !validID(req.ID) {
		return fmt.Errorf("%w: invalid ID", ErrInvalidRequest)
	}
	if len(req.Reserve) > 0 && req.ID == "" {
		return fmt.Errorf("%w: holds without an ID", ErrInvalidRequest)
	}
	for i := range req.Reserve {
		h := &req.Reserve[i]
		if err := validMeter(h.Meter); err != nil {
			return err
		}
		if h.Meter == req.Meter {
			return fmt.Errorf("%w: hold on the request meter", ErrInvalidRequest)
		}
		for j := 0; j < i; j++ {
			if req.Reserve[j].Meter == h.Meter {
				return fmt.Errorf("%w: two holds on one meter", ErrInvalidRequest)
			}
		}
		if h.Amount <= 0 {
			return fmt.Errorf("%w: hold amount must be positive", ErrInvalidRequest)
		}
		if h.TTL <= 0 {
			return fmt.Errorf("%w: hold TTL must be positive", ErrInvalidRequest)
		}
		if err := validLimit(h.Limit, h.Unlimited, h.Period, h.ExpireAt); err != nil {
			return err
		}
	}
	return nil
}

// validLimit checks the limit, period and expiry of one meter.
func validLimit(limit int64, unlimited bool, p Period, expireAt time.Time) error {
	if limit < 0 {
		return fmt.Errorf("%w: negative limit", ErrInvalidRequest)
	}
	if unlimited && limit != 0 {
		return fmt.Errorf("%w: limit set on an unlimited request", ErrInvalidRequest)
	}
	if !p.End.After(p.Start) {
		return fmt.Errorf("%w: empty period", ErrInvalidRequest)
	}
	if expireAt.Before(p.End) {
		return fmt.Errorf("%w: expiry before the period's end", ErrInvalidRequest)
	}
	return nil
}

// validateSettle reports whether req and used can be settled.
func validateSettle(req *TakeRequest, used []int64) error {
	if err := req.validate(); err != nil {
		return err
	}
	if len(req.Reserve) == 0 {
		return fmt.Errorf("%w: settle without holds", ErrInvalidRequest)
	}
	if len(used) != len(req.Reserve) {
		return fmt.Errorf("%w: %d amounts for %d holds", ErrInvalidRequest, len(used), len(req.Reserve))
	}
	for _, n := range used {
		if n < 0 {
			return fmt.Errorf("%w: negative settled amount", ErrInvalidRequest)
		}
	}
	return nil
}

// validateRefund reports whether req can be refunded.
func validateRefund(req *TakeRequest) error {
	if err := req.validate(); err != nil {
		return err
	}
	if req.ID == "" {
		return fmt.Errorf("%w: refund without an ID", ErrInvalidRequest)
	}
	return nil
}

// validID reports whether id follows the rule of [TakeRequest.ID].
func validID(id string) bool {
	if id == "" || len(id) > MaxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x21 || c > 0x7e || c == ':' || c == '{' || c == '}' {
			return false
		}
	}
	return true
}

// validateUsage reports whether a Usage query's names are valid.
func validateUsage(subject, meter string) error {
	if err := checkSubject(subject); err != nil {
		return err
	}
	return validMeter(meter)
}
