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

// job is one meter of one subject, reported under the subject's lease:
// the meter and the periods it bills.
type job struct {
	e       billing.Entitlement
	m       meterSpec
	proto   protocol
	now     time.Time
	periods []quota.Period
	states  []periodState
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
	ps.used, ps.read = max(ps.used, billable(u.Used, j.m.Included)), true
	return nil
}

// billable returns the units of a counter at used that are reported when
// the plan includes included units without reporting them.
func billable(used, included int64) int64 { return max(0, used-max(0, included)) }

func (r *Reporter) settled(p quota.Period, now time.Time) bool {
	return !now.Before(p.End.Add(r.cfg.Settle))
}

func (r *Reporter) expireAt(p quota.Period) time.Time { return p.End.Add(r.cfg.Retention) }

// outcomeRank orders the outcomes of a subject's meters: the subject's
// outcome is the highest of them.
var outcomeRank = [nOutcomes]int{outIdle: 0, outReported: 1, outUnbillable: 2, outBackoff: 3, outBusy: 4, outFailed: 5}

// reportSubject reports every meter of e over its current and previous
// period (see [Reporter.jobs]). It reads without the lease first and takes
// the lease, once for all the subject's meters, only when there is
// something to send, so idle subjects cost reads only. Each meter's
// billing chooses its protocol: meter events or usage records.
func (r *Reporter) reportSubject(ctx context.Context, e billing.Entitlement, flush bool) (outcome, error) {
	now := r.cfg.Now()
	if _, known := r.cfg.Plans.ByTier(e.Tier); r.cfg.Plans != nil && !known {
		return r.unbillable(ctx, e, quota.DefaultMeter, r.unbillablePeriods(e, now),
			fmt.Sprintf("tier %q is not in the plan catalog", e.Tier))
	}
	jobs, result, err := r.jobs(ctx, e, now)
	if err != nil || len(jobs) == 0 {
		return result, err
	}
	work := false
	for _, j := range jobs {
		if j.states, err = r.load(ctx, j, j.periods); err != nil {
			return outFailed, err
		}
		for i := range j.states {
			ps := &j.states[i]
			if ps.hasWork() {
				work = true
				continue
			}
			if ps.read && !ps.wm.Final && ps.used <= ps.wm.Reported && r.settled(ps.period, now) {
				// Closed, settled, fully reported: stop reading its counter.
				k := wmKey{Subject: e.Subject, Meter: j.m.Name, Period: ps.period}
				if _, err := r.cfg.watermarks.Commit(ctx, k, wmCommit{To: ps.used, Final: true}, r.expireAt(ps.period)); err != nil {
					return outFailed, err
				}
			}
			if ps.read && ps.used < ps.wm.Reported && j.m.Included == 0 {
				// (With included units, a tier change that raised them
				// lowers the billable units: what was reported stands.)
				r.log.WarnContext(ctx, "billing: usage counter below reported watermark",
					"subject", e.Subject, "meter", j.m.Name, "period", ps.period.ID(),
					"used", ps.used, "reported", ps.wm.Reported)
			}
		}
	}
	if !work {
		return result, nil
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

	sent := 0
	for _, j := range jobs {
		if j.proto.rereadUnderLease() {
			for i := range j.states {
				if j.states[i].read {
					if err := r.readUsage(lctx, j, &j.states[i]); err != nil {
						return outFailed, err
					}
				}
			}
		}
		for i := range j.states {
			n, err := r.reportPeriod(lctx, j, &j.states[i])
			sent += n
			if err != nil {
				return outFailed, err
			}
		}
	}
	if sent > 0 && outcomeRank[outReported] > outcomeRank[result] {
		result = outReported
	}
	return result, nil
}

// jobs returns the meters of e to report at now, each with its periods:
// every meter of e's tier over e's periods, except that a PreviousPeriod
// that ended on another tier (PreviousTier) is billed by that tier's
// meters instead, and not at all when that tier bills no usage. A meter
// that cannot be billed (no Stripe customer for meter events, no
// subscription item for usage records, or no billing period) is left out
// and reported by [Reporter.unbillable]; the outcome says whether any was
// unbillable.
func (r *Reporter) jobs(ctx context.Context, e billing.Entitlement, now time.Time) ([]*job, outcome, error) {
	result := outIdle
	prevTier := e.PreviousTier != "" && e.PreviousTier != e.Tier && !e.PreviousPeriod.IsZero()
	var cur, prev []quota.Period
	for _, p := range r.periods(e, now) {
		if prevTier && p.Start.Equal(e.PreviousPeriod.Start) {
			prev = append(prev, p)
		} else {
			cur = append(cur, p)
		}
	}
	var jobs []*job
	add := func(e, pe billing.Entitlement, periods, unbillableIn []quota.Period) error {
		for _, m := range r.cfg.meter(pe) {
			if m.Name == "" {
				continue
			}
			proto := r.protocol(m)
			why := proto.unready(e, m)
			if why == "" && e.Period.IsZero() {
				why = "it has no billing period"
			}
			if why != "" {
				out, err := r.unbillable(ctx, e, m.Name, unbillableIn, why)
				if err != nil {
					return err
				}
				if outcomeRank[out] > outcomeRank[result] {
					result = out
				}
				continue
			}
			if len(periods) > 0 {
				jobs = append(jobs, &job{e: e, m: m, proto: proto, now: now, periods: periods})
			}
		}
		return nil
	}
	if err := add(e, e, cur, r.unbillablePeriods(e, now)); err != nil {
		return nil, outFailed, err
	}
	if prevTier && len(prev) > 0 {
		pe := e
		pe.Tier = e.PreviousTier
		if err := add(e, pe, prev, prev); err != nil {
			return nil, outFailed, err
		}
	}
	return jobs, result, nil
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

// unbillablePeriods returns the periods in which quota counts e's usage:
// its periods, and its calendar period when it has no billing period.
func (r *Reporter) unbillablePeriods(e billing.Entitlement, now time.Time) []quota.Period {
	periods := r.periods(e, now)
	if e.Period.IsZero() {
		iv := quota.Month
		if p, ok := r.cfg.Plans.ByTier(e.Tier); ok {
			iv = p.Interval
		}
		periods = append(periods, quota.CalendarPeriod(iv, now))
	}
	return periods
}

// unbillable reports e as unbillable for reason when it is active, trialing
// or past_due and has counted units of meter in periods: it logs them at
// ERROR and returns outUnbillable. Otherwise e has nothing to bill.
func (r *Reporter) unbillable(ctx context.Context, e billing.Entitlement, meter string, periods []quota.Period, reason string) (outcome, error) {
	if !e.Status.Live() {
		return outIdle, nil
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
