package usage

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/quota"
)

// This file is the loop shared by both reporting protocols: which periods
// of a subject to report, reading them without the lease, taking the
// lease only when there is work, and reporting each period through the
// subject's protocol (protocol.go).

// periodState is one period of a subject, as read from the stores.
type periodState struct {
	period quota.Period
	wm     watermark
	// used is the period's billable units: its counter less the units
	// the period's plan includes without reporting them.
	used int64
	read bool // used was read (false for a final period)
}

func (ps *periodState) hasWork() bool {
	return ps.wm.inFlight != nil || (ps.read && ps.used > ps.wm.Reported)
}

// job is one subject's report under its lease.
type job struct {
	e     billing.Entitlement
	m     meterSpec
	proto protocol
	now   time.Time
}

// periods returns the periods of e still to consider at now: its
// PreviousPeriod and Period and, while a renewal has not been applied
// although Period has ended, the projected period that counts usage now
// (see [billing.Entitlement.CountingPeriod]). A projection contains now, so
// it is never settled and never marked final: its counter is read again
// once the renewal makes it the entitlement's Period.
func (r *Reporter) periods(e billing.Entitlement, now time.Time) []quota.Period {
	var out []quota.Period
	cands := []quota.Period{e.PreviousPeriod, e.Period}
	if p, projected := e.CountingPeriod(now); projected {
		cands = append(cands, p)
	}
	for _, p := range cands {
		switch {
		case p.IsZero(), !p.End.After(p.Start), now.Before(p.Start), now.After(p.End.Add(r.cfg.MaxLateness)):
			continue
		case slices.ContainsFunc(out, func(q quota.Period) bool { return q.Start.Equal(p.Start) }):
			continue
		}
		out = append(out, p)
	}
	return out
}

// load reads the watermarks of periods and the counters of those not final.
func (r *Reporter) load(ctx context.Context, j *job, periods []quota.Period) ([]periodState, error) {
	wms, err := r.cfg.watermarks.Load(ctx, j.e.Subject, j.m.Name, periods)
	if err != nil {
		return nil, err
	}
	out := make([]periodState, len(periods))
	for i, p := range periods {
		out[i] = periodState{period: p, wm: wms[i]}
		if wms[i].Final && wms[i].inFlight == nil {
			continue
		}
		if err := r.readUsage(ctx, j, &out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// readUsage reads ps's counter; the billable units never go below what an
// earlier read found.
func (r *Reporter) readUsage(ctx context.Context, j *job, ps *periodState) error {
	u, err := r.cfg.Counters.Usage(ctx, j.e.Subject, j.m.Name, ps.period)
	if err != nil {
		return fmt.Errorf("billing: read usage: %w", err)
	}
	ps.used, ps.read = max(ps.used, billable(u.Used, r.included(j.e, j.m, ps.period))), true
	return nil
}

// billable returns the units of a counter at used that are reported when
// the plan includes included units without reporting them.
func billable(used, included int64) int64 { return max(0, used-max(0, included)) }

// periodMeter returns the meter that bills period p of e: the meter of the
// tier p ended on (Entitlement.PreviousTier) for e's PreviousPeriod, m for
// any other period. It reports false when that tier bills no usage.
func (r *Reporter) periodMeter(e billing.Entitlement, m meterSpec, p quota.Period) (meterSpec, bool) {
	if e.PreviousTier == "" || e.PreviousTier == e.Tier || !p.Start.Equal(e.PreviousPeriod.Start) {
		return m, true
	}
	pe := e
	pe.Tier = e.PreviousTier
	return r.cfg.meter(pe)
}

// included returns the units of period p that its plan includes without
// reporting them (meterSpec.Included of the tier p ended on).
func (r *Reporter) included(e billing.Entitlement, m meterSpec, p quota.Period) int64 {
	if pm, ok := r.periodMeter(e, m, p); ok {
		return pm.Included
	}
	return m.Included
}

func (r *Reporter) settled(p quota.Period, now time.Time) bool {
	return !now.Before(p.End.Add(r.cfg.Settle))
}

func (r *Reporter) expireAt(p quota.Period) time.Time { return p.End.Add(r.cfg.Retention) }

// reportSubject reports e's current and previous period. It reads without
// the lease first and takes the lease only when there is something to
// send, so idle subjects cost reads only. The subject's plan chooses the
// protocol: meter events or usage records.
func (r *Reporter) reportSubject(ctx context.Context, e billing.Entitlement, flush bool) (outcome, error) {
	now := r.cfg.Now()
	m, ok := r.cfg.meter(e)
	if !ok || m.Name == "" {
		if _, known := r.cfg.Plans.ByTier(e.Tier); r.cfg.Plans != nil && !known {
			return r.unbillable(ctx, e, r.cfg.Meter, now, fmt.Sprintf("tier %q is not in the plan catalog", e.Tier))
		}
		return outIdle, nil
	}
	j := &job{e: e, m: m, proto: r.protocol(m), now: now}
	if why := j.proto.unready(e); why != "" {
		return r.unbillable(ctx, e, m.Name, now, why)
	}
	if e.Period.IsZero() {
		return r.unbillable(ctx, e, m.Name, now, "it has no billing period")
	}
	periods := slices.DeleteFunc(r.periods(e, now), func(p quota.Period) bool {
		// A previous period whose tier billed no usage is not billed
		// under the current tier's meter.
		_, ok := r.periodMeter(e, m, p)
		return !ok
	})
	if len(periods) == 0 {
		return outIdle, nil
	}
	states, err := r.load(ctx, j, periods)
	if err != nil {
		return outFailed, err
	}
	work := false
	for i := range states {
		ps := &states[i]
		if ps.hasWork() {
			work = true
			continue
		}
		if ps.read && !ps.wm.Final && ps.used <= ps.wm.Reported && r.settled(ps.period, now) {
			// Closed, settled, fully reported: stop reading its counter.
			k := wmKey{Subject: e.Subject, Meter: m.Name, Period: ps.period}
			if _, err := r.cfg.watermarks.Commit(ctx, k, wmCommit{To: ps.used, Final: true}, r.expireAt(ps.period)); err != nil {
				return outFailed, err
			}
		}
		if ps.read && ps.used < ps.wm.Reported && r.included(e, m, ps.period) == 0 {
			// (With included units, a tier change that raised them
			// lowers the billable units: what was reported stands.)
			r.log.WarnContext(ctx, "billing: usage counter below reported watermark",
				"subject", e.Subject, "meter", m.Name, "period", ps.period.ID(),
				"used", ps.used, "reported", ps.wm.Reported)
		}
	}
	if !work {
		return outIdle, nil
	}

	token, deadline, ok, err := r.acquire(ctx, e.Subject, flush)
	if err != nil {
		return outFailed, err
	}
	if !ok {
		return outBusy, nil
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.CallTimeout)
		defer cancel()
		if err := r.cfg.leases.Release(rctx, e.Subject, token); err != nil {
			r.log.WarnContext(ctx, "billing: release report lease", "subject", e.Subject, "err", err)
		}
	}()
	lctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	if j.proto.rereadUnderLease() {
		for i := range states {
			if states[i].read {
				if err := r.readUsage(lctx, j, &states[i]); err != nil {
					return outFailed, err
				}
			}
		}
	}
	sent := 0
	for i := range states {
		n, err := r.reportPeriod(lctx, j, &states[i])
		sent += n
		if err != nil {
			return outFailed, err
		}
	}
	if sent == 0 {
		return outIdle, nil
	}
	return outReported, nil
}

// reportPeriod reports one period through the job's protocol. When another
// reporter moved the period's watermark since it was read (before the
// lease was ours), it reads the period again and goes on from there, once.
func (r *Reporter) reportPeriod(ctx context.Context, j *job, ps *periodState) (int, error) {
	n, err := j.proto.report(ctx, r, j, ps)
	if !errors.Is(err, errWatermarkMoved) {
		return n, err
	}
	fresh, err := r.load(ctx, j, []quota.Period{ps.period})
	if err != nil {
		return n, err
	}
	*ps = fresh[0]
	m, err := j.proto.report(ctx, r, j, ps)
	return n + m, err
}

// unbillable reports e as unbillable for reason when it is active, trialing
// or past_due and has counted units of meter in the periods quota counts it
// in (its calendar period when it has no billing period): it logs them at
// ERROR and returns outUnbillable. Otherwise e has nothing to bill.
func (r *Reporter) unbillable(ctx context.Context, e billing.Entitlement, meter string, now time.Time, reason string) (outcome, error) {
	if !e.Status.Live() {
		return outIdle, nil
	}
	periods := r.periods(e, now)
	if e.Period.IsZero() {
		iv := quota.Month
		if p, ok := r.cfg.Plans.ByTier(e.Tier); ok {
			iv = p.Interval
		}
		periods = append(periods, quota.CalendarPeriod(iv, now))
	}
	var used int64
	for _, p := range periods {
		u, err := r.cfg.Counters.Usage(ctx, e.Subject, meter, p)
		if err != nil {
			return outFailed, fmt.Errorf("billing: read usage: %w", err)
		}
		used += u.Used
	}
	if used == 0 {
		return outIdle, nil
	}
	r.log.ErrorContext(ctx, "billing: counted usage cannot be billed", "subject", e.Subject, "tier", e.Tier,
		"status", string(e.Status), "meter", meter, "units", used, "reason", reason)
	return outUnbillable, nil
}

// acquire takes subject's lease, waiting up to FlushWait when flush is
// set. The returned deadline is when the holder must stop: four fifths of
// the TTL after the attempt started, so it ends before the lease does.
func (r *Reporter) acquire(ctx context.Context, subject string, flush bool) (string, time.Time, bool, error) {
	giveUp := time.Now().Add(r.cfg.FlushWait)
	pause := 50 * time.Millisecond
	for {
		start := time.Now()
		tok, ok, err := r.cfg.leases.Acquire(ctx, subject, r.cfg.LeaseTTL)
		if err != nil || ok || !flush || time.Now().Add(pause).After(giveUp) {
			return tok, start.Add(r.cfg.LeaseTTL * 4 / 5), ok, err
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", time.Time{}, false, ctx.Err()
		case <-t.C:
		}
		pause = min(2*pause, time.Second)
	}
}
