package quota

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/billkit/billkit/internal/subject"
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
	// ErrInvalidSubject is returned (wrapped) by a [Store] for a subject
	// that billkit does not accept in a storage key: every billkit package
	// takes subjects of 1 to 200 bytes of valid UTF-8 without '{' or '}'
	// (they would break the Redis Cluster hash tag) and without control
	// characters. The error never contains the subject.
	ErrInvalidSubject = errors.New("quota: invalid subject")
	// ErrInvalidMeter is returned for a meter name that is empty, longer
	// than [MaxMeterLen] bytes, or contains ':', '{' or '}'.
	ErrInvalidMeter = errors.New("quota: invalid meter")
	// ErrInvalidRequest is returned by a [Store] for a request whose
	// period, expiry, ID or holds are missing or inconsistent.
	ErrInvalidRequest = errors.New("quota: invalid take request")
	// ErrDuplicateTake is returned by [Store.Take] for a take whose ID was
	// used before, or refunded before it ran ([Store.Refund]); such a
	// take counts nothing.
	ErrDuplicateTake = errors.New("quota: take ID already used or refunded")
	// ErrInvalidSettle is returned, wrapped, by [Settle] for a meter that
	// the request did not reserve, a negative amount, or a settle after
	// the handler returned.
	ErrInvalidSettle = errors.New("quota: invalid settle")
	// ErrCounterOverflow is returned by [MemoryStore.Take] when a count
	// would leave the int64 range ([RedisStore.Take] returns Redis's own
	// error for it).
	ErrCounterOverflow = errors.New("quota: counter would overflow")
	// ErrInvalidConfig is returned, wrapped, by [New] and [NewRedisStore]
	// for a configuration that cannot work, such as a missing required
	// field or a go-redis client without ContextTimeoutEnabled; the
	// wrapping error names the field.
	ErrInvalidConfig = errors.New("quota: invalid config")
)

// MaxMeterLen is the longest meter name, in bytes.
const MaxMeterLen = 64

// checkSubject reports whether s can be used as a subject in a key: the
// rule of every billkit package, internal/subject, wrapped in
// [ErrInvalidSubject].
func checkSubject(s string) error {
	if err := subject.Check(s); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSubject, err)
	}
	return nil
}

// validMeter reports whether m can be used as a meter name in a key.
func validMeter(m string) error {
	if m == "" || len(m) > MaxMeterLen {
		return ErrInvalidMeter
	}
	for i := 0; i < len(m); i++ {
		if c := m[i]; c == '{' || c == '}' || c == ':' {
			return ErrInvalidMeter
		}
	}
	return nil
}

// Interval is the length of a calendar period, in UTC. Its zero value is
// [Month].
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
//
// A Period is a plain value, safe to copy and share. Its zero value is the
// empty period ([Period.IsZero]): in [Limits.Period] it means "use the
// calendar period", and a [Store] refuses it in a [TakeRequest].
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
	var b [16]byte
	return string(p.appendID(b[:0]))
}

// appendID appends p.ID() to b without going through time.Format.
func (p Period) appendID(b []byte) []byte {
	s := p.Start.UTC()
	y, mo, d := s.Date()
	b = append4(b, y)
	b = append2(b, int(mo))
	b = append2(b, d)
	h, mi, sec := s.Clock()
	if h == 0 && mi == 0 && sec == 0 && s.Nanosecond() == 0 {
		return b
	}
	b = append(b, 'T')
	b = append2(b, h)
	b = append2(b, mi)
	b = append2(b, sec)
	return append(b, 'Z')
}

func append2(b []byte, v int) []byte {
	return append(b, byte('0'+v/10), byte('0'+v%10))
}

func append4(b []byte, v int) []byte {
	if v < 0 || v > 9999 {
		// Outside time.Format's fixed-width range; rare enough to not matter.
		return append(b, time.Date(v, 1, 1, 0, 0, 0, 0, time.UTC).Format("2006")...)
	}
	return append(b, byte('0'+v/1000), byte('0'+v/100%10), byte('0'+v/10%10), byte('0'+v%10))
}

// IsZero reports whether p is the zero period.
func (p Period) IsZero() bool { return p.Start.IsZero() && p.End.IsZero() }

// Contains reports whether t falls within [Start, End).
func (p Period) Contains(t time.Time) bool {
	return !t.Before(p.Start) && t.Before(p.End)
}

// Limits is what a subject's plan allows in one period. It is a plain
// value, safe to copy and share.
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
// count before requests are denied. Without overage it is Included (or Hard,
// when lower); with overage it is Hard. It returns 0 both for a plan without
// a cap (see [Limits.Unlimited]) and for a plan that allows nothing, such as
// the zero Limits; negative fields count as zero.
func (l Limits) Limit() int64 {
	switch {
	case l.Hard > 0:
		if !l.Overage && l.Included < l.Hard {
			return max(l.Included, 0)
		}
		return l.Hard
	case l.Overage:
		return 0
	default:
		return max(l.Included, 0)
	}
}

// Unlimited reports whether the plan has no hard limit: it allows overage
// and sets no Hard. A Limits whose [Limits.Limit] is 0 and that is not
// Unlimited allows nothing.
func (l Limits) Unlimited() bool { return l.Overage && l.Hard <= 0 }

// PeriodAt returns the period that counts usage at time t.
func (l Limits) PeriodAt(t time.Time) Period {
	if !l.Period.IsZero() && l.Period.Contains(t) {
		return l.Period
	}
	return CalendarPeriod(l.Interval, t)
}

// LimitsSource tells the middleware what a subject's plan allows of a
// meter. It is called for every meter of every request, so an
// implementation backed by a network store must answer from an in-process
// cache (the billing package's does).
//
// Limits returns [ErrNoPlan] (possibly wrapped) when the subject has no
// active plan, and the zero [Limits] (which allow nothing) when the plan
// does not include meter; any other error is a failure of the source and
// is answered like a store failure (503 when fail-closed). Implementations
// must be safe for concurrent use.
type LimitsSource interface {
	Limits(ctx context.Context, subject, meter string) (Limits, error)
}

// LimitsFunc adapts a function to [LimitsSource]; it is as safe for
// concurrent use as the function. A nil LimitsFunc is not usable.
type LimitsFunc func(ctx context.Context, subject, meter string) (Limits, error)

// Limits calls f(ctx, subject, meter).
func (f LimitsFunc) Limits(ctx context.Context, subject, meter string) (Limits, error) {
	return f(ctx, subject, meter)
}

var (
	_ LimitsSource = LimitsFunc(nil)
	_ LimitsSource = StaticLimits{}
)

// StaticLimits is a [LimitsSource] that gives every subject the same limits
// of every meter. It is safe for concurrent use. Its zero value gives every
// subject the zero [Limits], which allow nothing.
type StaticLimits Limits

// Limits returns l for every subject and meter.
func (l StaticLimits) Limits(context.Context, string, string) (Limits, error) { return Limits(l), nil }
