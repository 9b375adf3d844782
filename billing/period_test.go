package billing

import (
	"testing"
	"time"

	"github.com/billkit/billkit/quota"
)

func utc(y int, m time.Month, d, h int) time.Time { return time.Date(y, m, d, h, 0, 0, 0, time.UTC) }

func TestProjectPeriod(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		p          quota.Period
		now        time.Time
		start, end time.Time
	}{
		{"monthly", quota.Period{Start: utc(2026, 11, 1, 12), End: utc(2026, 12, 1, 12)}, utc(2026, 12, 1, 12),
			utc(2026, 12, 1, 12), utc(2027, 1, 1, 12)},
		{"anchor 15", quota.Period{Start: utc(2026, 1, 15, 9), End: utc(2026, 2, 15, 9)}, utc(2026, 2, 20, 0),
			utc(2026, 2, 15, 9), utc(2026, 3, 15, 9)},
		{"anchor 31 clamped to February", quota.Period{Start: utc(2027, 1, 31, 0), End: utc(2027, 2, 28, 0)}, utc(2027, 3, 1, 0),
			utc(2027, 2, 28, 0), utc(2027, 3, 31, 0)},
		{"anchor 30 from a 30-day month", quota.Period{Start: utc(2026, 4, 30, 0), End: utc(2026, 5, 30, 0)}, utc(2026, 5, 30, 0),
			utc(2026, 5, 30, 0), utc(2026, 6, 30, 0)},
		{"anchor 30 into February", quota.Period{Start: utc(2027, 1, 30, 0), End: utc(2027, 2, 28, 0)}, utc(2027, 3, 1, 0),
			utc(2027, 2, 28, 0), utc(2027, 3, 30, 0)},
		{"yearly on Feb 29", quota.Period{Start: utc(2028, 2, 29, 0), End: utc(2029, 2, 28, 0)}, utc(2029, 3, 1, 0),
			utc(2029, 2, 28, 0), utc(2030, 2, 28, 0)},
		{"weekly", quota.Period{Start: utc(2026, 11, 2, 0), End: utc(2026, 11, 9, 0)}, utc(2026, 11, 9, 1),
			utc(2026, 11, 9, 0), utc(2026, 11, 16, 0)},
		{"trial of 14 days", quota.Period{Start: utc(2026, 11, 1, 8), End: utc(2026, 11, 15, 8)}, utc(2026, 11, 15, 8),
			utc(2026, 11, 15, 8), utc(2026, 11, 29, 8)},
		{"monthly, two renewals late", quota.Period{Start: utc(2026, 10, 1, 0), End: utc(2026, 11, 1, 0)}, utc(2026, 12, 3, 0),
			utc(2026, 12, 1, 0), utc(2027, 1, 1, 0)},
		{"daily, three renewals late", quota.Period{Start: utc(2026, 11, 1, 0), End: utc(2026, 11, 2, 0)}, utc(2026, 11, 5, 7),
			utc(2026, 11, 5, 0), utc(2026, 11, 6, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := projectPeriod(tc.p, tc.now)
			if !got.Start.Equal(tc.start) || !got.End.Equal(tc.end) {
				t.Fatalf("projectPeriod = [%v, %v), want [%v, %v)", got.Start, got.End, tc.start, tc.end)
			}
			if !got.Contains(tc.now) {
				t.Fatalf("projection [%v, %v) does not contain now %v", got.Start, got.End, tc.now)
			}
		})
	}
}

func TestCountingPeriodStatuses(t *testing.T) {
	t.Parallel()
	p := quota.Period{Start: utc(2026, 11, 1, 12), End: utc(2026, 12, 1, 12)}
	late := p.End.Add(time.Hour)
	for st, want := range map[Status]bool{
		StatusActive: true, StatusTrialing: true, StatusPastDue: true,
		StatusCanceled: false, StatusUnpaid: false, StatusPaused: false, StatusIncomplete: false, StatusPending: false,
	} {
		got, projected := Entitlement{Status: st, Period: p}.CountingPeriod(late)
		if projected != want || (want && !got.Start.Equal(p.End)) || (!want && got != p) {
			t.Errorf("%s: CountingPeriod = %v, %v; want projected %v", st, got, projected, want)
		}
	}
	if got, projected := (Entitlement{Status: StatusActive, Period: p}).CountingPeriod(p.End.Add(-time.Nanosecond)); projected || got != p {
		t.Errorf("within the period: %v, %v; want the period itself", got, projected)
	}
	if got, projected := (Entitlement{Status: StatusActive}).CountingPeriod(late); projected || !got.IsZero() {
		t.Errorf("no period: %v, %v; want none", got, projected)
	}
}
