package usage

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/quota"
)

// A protocol is one way of reporting a period to Stripe, behind the shared
// loop of subject.go:
//
//   - deltas (Billing Meter events): the units counted since the last
//     acknowledged report, under a deterministic identifier written down
//     as "in flight" before the call and resent unchanged after a crash.
//   - totals (legacy usage records): the period's running total with
//     action=set at the period's start, which overwrites, so a repeat is
//     harmless.
type protocol interface {
	// unready returns why meter m of e cannot be billed this way, "" when
	// it can.
	unready(e billing.Entitlement, m meterSpec) string
	// rereadUnderLease reports whether the counters must be read again
	// once the lease is held (a total must not be older than one a
	// previous holder sent; deltas compare-and-set their watermark).
	rereadUnderLease() bool
	// report reports ps under the subject's lease and returns the number
	// of reports Stripe acknowledged.
	report(ctx context.Context, r *Reporter, j *job, ps *periodState) (int, error)
}

// protocol returns the protocol of meter m.
func (r *Reporter) protocol(m meterSpec) protocol {
	if m.mode() == reportTotals {
		return totals{}
	}
	return deltas{}
}

type deltas struct{}

func (deltas) unready(e billing.Entitlement, _ meterSpec) string {
	if e.CustomerID == "" {
		return "it has no Stripe customer"
	}
	return ""
}

func (deltas) rereadUnderLease() bool { return false }

func (deltas) report(ctx context.Context, r *Reporter, j *job, ps *periodState) (int, error) {
	k := wmKey{Subject: j.e.Subject, Meter: j.m.Name, Period: ps.period}
	settled := r.settled(ps.period, j.now)
	sent := 0
	if f := ps.wm.inFlight; f != nil {
		// Resend exactly what may already have reached Stripe.
		if err := r.send(ctx, j.report(ps.period, *f)); err != nil {
			return sent, err
		}
		sent++
		if err := r.commit(ctx, k, ps, wmCommit{Identifier: f.Identifier, To: f.To, Final: settled && ps.read && f.To == ps.used}); err != nil {
			return sent, err
		}
	}
	if !ps.read || ps.used <= ps.wm.Reported {
		return sent, nil
	}
	f := inFlight{From: ps.wm.Reported, To: ps.used, Timestamp: eventTime(ps.period, j.now)}
	f.Identifier = reportIdentifier(r.cfg.IdentifierPrefix, reportDeltas, j.e.Subject, j.m.Name, ps.period, "", f.From, f.To)
	ok, err := r.cfg.watermarks.Begin(ctx, k, f, r.expireAt(ps.period))
	if err != nil {
		return sent, err
	}
	if !ok {
		return sent, errWatermarkMoved
	}
	if err := r.send(ctx, j.report(ps.period, f)); err != nil {
		return sent, err
	}
	sent++
	return sent, r.commit(ctx, k, ps, wmCommit{Identifier: f.Identifier, To: f.To, Final: settled})
}

type totals struct{}

func (totals) unready(_ billing.Entitlement, m meterSpec) string {
	if m.ItemID == "" {
		return "its subscription has no item of the meter's metered price"
	}
	return ""
}

func (totals) rereadUnderLease() bool { return true }

func (totals) report(ctx context.Context, r *Reporter, j *job, ps *periodState) (int, error) {
	if ps.wm.inFlight != nil {
		return 0, fmt.Errorf("billing: watermark %s holds a meter event; the plan's billing changed", ps.period.ID())
	}
	if !ps.read || ps.used <= ps.wm.Reported {
		return 0, nil
	}
	rep := j.report(ps.period, inFlight{From: ps.wm.Reported, To: ps.used, Timestamp: ps.period.Start.UTC()})
	rep.Identifier = reportIdentifier(r.cfg.IdentifierPrefix, reportTotals, j.e.Subject, j.m.Name, ps.period, j.m.ItemID, 0, ps.used)
	if err := r.send(ctx, rep); err != nil {
		return 0, err
	}
	k := wmKey{Subject: j.e.Subject, Meter: j.m.Name, Period: ps.period}
	return 1, r.commit(ctx, k, ps, wmCommit{To: ps.used, Final: r.settled(ps.period, j.now)})
}

// report returns the report of the range f of period p.
func (j *job) report(p quota.Period, f inFlight) usageReport {
	return usageReport{
		Subject: j.e.Subject, Tier: j.e.Tier, CustomerID: j.e.CustomerID, SubscriptionItemID: j.m.ItemID,
		Meter: j.m, Period: p, From: f.From, To: f.To, Identifier: f.Identifier, Timestamp: f.Timestamp,
	}
}

// commit writes what Stripe acknowledged to ps's watermark.
func (r *Reporter) commit(ctx context.Context, k wmKey, ps *periodState, c wmCommit) error {
	ok, err := r.cfg.watermarks.Commit(ctx, k, c, r.expireAt(ps.period))
	if err != nil {
		return err
	}
	if !ok {
		return errWatermarkMoved
	}
	ps.wm.Reported = max(ps.wm.Reported, c.To)
	ps.wm.inFlight = nil
	return nil
}

// maxRateLimited is how many times one report is sent again after Stripe
// answered 429 before the report fails.
const maxRateLimited = 3

// send delivers one report within the rate limit and CallTimeout, through
// the sink of the report's meter. When Stripe answers 429 it slows the
// reporter down (see Config.Rate) and sends the same report again, up to
// maxRateLimited times.
func (r *Reporter) send(ctx context.Context, rep usageReport) error {
	mode := rep.Meter.mode()
	snk := r.cfg.sinks[mode-1]
	for attempt := 0; ; attempt++ {
		if err := r.bucket.wait(ctx); err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
		start := time.Now()
		err := snk.Report(cctx, rep)
		cancel()
		again := errors.Is(err, errAlreadyReported)
		if again {
			err = nil
		}
		if obs := r.cfg.Observer.Report; obs != nil {
			o := ReportObservation{Outcome: Reported, Plan: rep.Tier, Meter: rep.Meter.Name, Sink: mode.sink(),
				Units: rep.To - rep.From, Duration: time.Since(start), Err: err}
			if again {
				o.Outcome = AlreadyReported
			}
			if err != nil {
				o.Outcome = ReportFailed
				if isRateLimited(err) && attempt+1 < maxRateLimited {
					o.Outcome = RateLimited
				}
			}
			obs(ctx, o)
		}
		if err == nil {
			r.bucket.recover()
			break
		}
		r.failures.Add(1)
		if !isRateLimited(err) {
			return err
		}
		r.limited.Add(1)
		pause := r.bucket.throttleFor(r.cfg.RateLimitPause)
		r.log.WarnContext(ctx, "billing: Stripe rate limit reached; slowing down", "pause", pause,
			"rate", r.bucket.currentRate(), "attempt", attempt+1)
		if attempt+1 >= maxRateLimited {
			return err
		}
	}
	r.reports.Add(1)
	r.log.DebugContext(ctx, "billing: usage reported", "subject", rep.Subject, "meter", rep.Meter.Name,
		"period", rep.Period.ID(), "from", rep.From, "to", rep.To, "mode", mode.String())
	return nil
}

// isRateLimited reports whether err is Stripe's 429 answer.
func isRateLimited(err error) bool {
	var se *stripe.Error
	return errors.As(err, &se) && se.HTTPStatusCode == http.StatusTooManyRequests
}

// eventTime is the timestamp of a delta reported at now: now, kept within
// the period (a closed period's late units land on its last second).
func eventTime(p quota.Period, now time.Time) time.Time {
	t := now.Truncate(time.Second)
	if last := p.End.Add(-time.Second); t.After(last) {
		t = last
	}
	if t.Before(p.Start) {
		t = p.Start
	}
	return t.UTC()
}
