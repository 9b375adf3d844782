package billing

import (
	"time"

	"github.com/billkit/billkit/quota"
)

// maxProjectedSteps bounds the projection of a calendar-month period (a
// renewal missing for more than this many periods is not projected).
const maxProjectedSteps = 1200

// Live reports whether s is a status under which Stripe renews the
// subscription at the end of its period.
func (s Status) Live() bool {
	return s == StatusActive || s == StatusTrialing || s == StatusPastDue
}

// CountingPeriod returns the billing period that counts e's usage at now,
// and whether it is a projection of the next period (a renewal not yet
// applied).
//
// It is e.Period while now falls before its end. When now is at or past
// e.Period.End and e's subscription is live (active, trialing or
// past_due), the renewal has happened at Stripe but its event has not
// been applied yet: the period returned is then the projected next one,
// starting exactly at e.Period.End, where Stripe's renewed period starts.
// Units counted in it share their counter with the renewed period (a
// counter's key holds its period's start only, see [quota.Period.ID]), so
// they are reported once the renewal is applied. See [projectPeriod] for
// its end.
func (e Entitlement) CountingPeriod(now time.Time) (quota.Period, bool) {
	p := e.Period
	if p.IsZero() || !p.End.After(p.Start) || now.Before(p.End) || !e.Status.Live() {
		return p, false
	}
	return projectPeriod(p, now), true
}

// projectPeriod returns the period after p that contains now (now is at
// or after p.End), following p's interval:
//
//   - A period of n whole calendar months (n from 1 to 12, Stripe's
//     monthly and yearly prices) steps by n months on the same billing
//     anchor as Stripe does: the anchor's day of the month, or the last
//     day of a shorter month. When p starts on the last day of a month
//     the anchor may have been any later day; the last day of the month is
//     assumed, so the projected end is never earlier than Stripe's.
//   - Any other period (days, weeks, a trial) steps by p's length.
//
// The first projected start is exact; the projected end, and the start of
// any further step (a renewal late by more than a whole period), are
// estimates that the renewal's event replaces.
func projectPeriod(p quota.Period, now time.Time) quota.Period {
	s, e := p.Start.UTC(), p.End.UTC()
	if n, anchor, ok := monthStep(s, e); ok {
		cur := quota.Period{Start: e, End: addMonths(e, n, anchor)}
		for i := 0; i < maxProjectedSteps && !now.Before(cur.End); i++ {
			cur = quota.Period{Start: cur.End, End: addMonths(cur.End, n, anchor)}
		}
		return cur
	}
	d := e.Sub(s)
	start := e
	if lag := now.Sub(e); lag >= d {
		start = e.Add(lag / d * d)
	}
	return quota.Period{Start: start, End: start.Add(d)}
}

// monthStep reports whether [s, e) is n whole calendar months on a billing
// anchor day, and returns n and the largest anchor day consistent with it.
func monthStep(s, e time.Time) (n, anchor int, ok bool) {
	sh, sm, ss := s.Clock()
	eh, em, es := e.Clock()
	if sh != eh || sm != em || ss != es || s.Nanosecond() != e.Nanosecond() {
		return 0, 0, false
	}
	n = (e.Year()-s.Year())*12 + int(e.Month()) - int(s.Month())
	if n < 1 || n > 12 {
		return 0, 0, false
	}
	switch {
	case s.Day() < lastDay(s):
		anchor = s.Day() // not clamped: the anchor itself
	case e.Day() == lastDay(e):
		anchor = 31 // both clamped, or both the anchor: assume the latest
	default:
		anchor = e.Day()
	}
	if anchor < s.Day() || min(anchor, lastDay(e)) != e.Day() {
		return 0, 0, false
	}
	return n, anchor, true
}

// addMonths returns t moved n calendar months on, on day anchor (or the
// last day of the month when it is shorter), at t's time of day.
func addMonths(t time.Time, n, anchor int) time.Time {
	first := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC).AddDate(0, n, 0)
	h, m, s := t.Clock()
	return time.Date(first.Year(), first.Month(), min(anchor, lastDay(first)), h, m, s, t.Nanosecond(), time.UTC)
}

// lastDay returns the number of days in t's month.
func lastDay(t time.Time) int {
	return time.Date(t.Year(), t.Month()+1, 0, 0, 0, 0, 0, time.UTC).Day()
}
