package quota

import (
	"context"
	"errors"
	"time"
)

// Errors returned by quota. A decision that denies a request is a result, not
// an error; these report that no decision could be made.
var (
	// ErrNoPlan is returned by a [LimitsSource] when the subject has no
	// active plan. The middleware answers it with a problem response and
	// counts nothing.
	ErrNoPlan = errors.New("quota: subject has no active plan")
	// ErrInvalidCost is returned when a request's cost is zero or negative.
	ErrInvalidCost = errors.New("quota: cost must be positive")
)

// Interval is the length of a calendar period, in UTC.
type Interval int

const (
	// Month is the calendar month in UTC. It is the zero value.
	Month Interval = iota
	// Day is the calendar day in UTC.
	Day
)

// Period is the half-open time range [Start, End) over which usage is
// counted. A counter's key carries its period's [Period.ID], so a reset at
// End is exact and a closed period's total stays readable for billing.
type Period struct {
	Start, End time.Time
}

// CalendarPeriod returns the calendar period of length iv, in UTC, that
// contains t.
func CalendarPeriod(iv Interval, t time.Time) Period {
	t = t.UTC()
	switch iv {
	case Day:
		s := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
		return Period{Start: s, End: s.AddDate(0, 0, 1)}
	default:
		s := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		return Period{Start: s, End: s.AddDate(0, 1, 0)}
	}
}

// ID returns the period's identifier as used in storage keys: the UTC start
// as 20061102 when it falls on midnight, else as 20061102T150405Z.
func (p Period) ID() string {
	s := p.Start.UTC()
	if s.Hour() == 0 && s.Minute() == 0 && s.Second() == 0 && s.Nanosecond() == 0 {
		return s.Format("20060102")
	}
	return s.Format("20060102T150405Z")
}

// IsZero reports whether p is the zero period.
func (p Period) IsZero() bool { return p.Start.IsZero() && p.End.IsZero() }

// Contains reports whether t falls within [Start, End).
func (p Period) Contains(t time.Time) bool {
	return !t.Before(p.Start) && t.Before(p.End)
}

// Limits is what a subject's plan allows in one period.
//
// The zero value allows nothing: a request against it is denied.
type Limits struct {
	// Plan names the plan, for the RateLimit-Policy header and problem
	// bodies (for example "pro"). Optional.
	Plan string
	// Included is the number of units the plan's price includes per period.
	Included int64
	// Soft is a warning threshold: the request that makes usage reach it is
	// allowed, flagged in its response headers and reported to
	// Config.OnSoftLimit. Zero means no soft limit.
	Soft int64
	// Hard is the number of units after which requests are denied with 402.
	// Zero means Included when Overage is false, and no cap when Overage is
	// true.
	Hard int64
	// Overage allows usage above Included (up to Hard); the units above
	// Included are overage, billed by the billing package.
	Overage bool
	// Period is the explicit counting period, such as the subscription's
	// current billing period from Stripe. When it is zero, or does not
	// contain the time of the request, the calendar period of Interval is
	// used.
	Period Period
	// Interval is the calendar period used when Period does not apply. The
	// zero value is Month.
	Interval Interval
}

// Limit returns the effective hard limit: the number of units a period may
// count before requests are denied, or 0 for no cap.
func (l Limits) Limit() int64 {
	switch {
	case l.Hard > 0:
		if !l.Overage && l.Included < l.Hard {
			return l.Included
		}
		return l.Hard
	case l.Overage:
		return 0
	default:
		return l.Included
	}
}

// PeriodAt returns the period that counts usage at time t.
func (l Limits) PeriodAt(t time.Time) Period {
	if !l.Period.IsZero() && l.Period.Contains(t) {
		return l.Period
	}
	return CalendarPeriod(l.Interval, t)
}

// LimitsSource tells the middleware what a subject's plan allows. It is
// called on every request, so an implementation backed by a network store
// must answer from an in-process cache (the billing package's does).
//
// Limits returns [ErrNoPlan] (possibly wrapped) when the subject has no
// active plan; any other error is a failure of the source and is answered
// like a store failure (503 when fail-closed).
type LimitsSource interface {
	Limits(ctx context.Context, subject string) (Limits, error)
}

// LimitsFunc adapts a function to [LimitsSource].
type LimitsFunc func(ctx context.Context, subject string) (Limits, error)

// Limits calls f(ctx, subject).
func (f LimitsFunc) Limits(ctx context.Context, subject string) (Limits, error) {
	return f(ctx, subject)
}

// StaticLimits is a [LimitsSource] that gives every subject the same limits.
type StaticLimits Limits

// Limits returns l for every subject.
func (l StaticLimits) Limits(context.Context, string) (Limits, error) { return Limits(l), nil }
