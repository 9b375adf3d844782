package billing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/billkit/billkit/quota"
	"github.com/billkit/billkit/webhook"
	"github.com/stripe/stripe-go/v76"
)

// MeterFunc returns the meter to report for an entitlement, or false when
// the entitlement has nothing to report (for example a plan without a
// metered price). It must be safe for concurrent use.
//
// The meter of e's Tier reports every period. For e's PreviousPeriod the
// reporter also calls it with Tier set to PreviousTier (the tier that
// period ended on, when it differs): that period is then reported with
// that meter's Included units, and not at all when it returns false.
type MeterFunc func(e Entitlement) (UsageMeter, bool)

// PlanMeters returns the [MeterFunc] of a plan catalog: an entitlement's
// tier reports quota meter (quota.DefaultMeter when empty) when its plan
// has a MeterEventName (reported as meter events under that name) or a
// MeteredPriceID (reported as usage records to the subscription item of
// that price); when a plan has both, meter events win. Included is set to
// the plan's Included when the plan bills overage only ([BillOverage]). It
// is the default of ReporterConfig.Meter.
func PlanMeters(plans *Plans, meter string) MeterFunc {
	if meter == "" {
		meter = quota.DefaultMeter
	}
	return func(e Entitlement) (UsageMeter, bool) {
		if plans == nil {
			return UsageMeter{}, false
		}
		p, ok := plans.ByTier(e.Tier)
		if !ok || (p.MeteredPriceID == "" && p.MeterEventName == "") {
			return UsageMeter{}, false
		}
		um := UsageMeter{Name: meter, EventName: p.MeterEventName}
		if um.EventName == "" {
			um.PriceID = p.MeteredPriceID
		}
		if p.Bill == BillOverage {
			um.Included = p.Included
		}
		return um, true
	}
}

// ReporterConfig configures a [Reporter]. Entitlements, Counters, Sink,
// Watermarks, Leases, and Plans or Meter are required; every other zero
// field means the documented default.
type ReporterConfig struct {
	// Entitlements lists the subjects to report (ForEach) and maps a
	// Stripe customer to its subject (SubjectByCustomer). Required.
	Entitlements EntitlementStore
	// Counters holds the usage counters to report. Required.
	Counters quota.Store
	// MeterEvents delivers the usage of plans billed through Billing
	// Meters (Plan.MeterEventName): a [MeterEventSink], or any sink whose
	// Mode is ReportDeltas. It is the default for new integrations.
	MeterEvents UsageSink
	// UsageRecords delivers the usage of plans billed through legacy
	// metered prices (Plan.MeteredPriceID, accounts pinned before API
	// version 2025-03-31.basil): a [UsageRecordSink], or any sink whose
	// Mode is ReportTotals.
	//
	// One of MeterEvents and UsageRecords is required, and with Plans,
	// each that a plan bills through. The reporter routes each subject by
	// its plan, so one catalog may mix both.
	UsageRecords UsageSink
	// Watermarks records what Stripe acknowledged. Required; use a
	// [RedisWatermarkStore] in production (on a Redis with persistence).
	Watermarks WatermarkStore
	// Leases lets one reporter at a time report a subject. Required; use a
	// [RedisLeaseStore] when several processes run a reporter.
	Leases LeaseStore
	// Plans is the plan catalog; with it, Meter defaults to
	// PlanMeters(Plans, quota.DefaultMeter).
	Plans *Plans
	// Meter says which meter of an entitlement is reported. The default
	// value is [PlanMeters] of Plans; one of the two is required.
	Meter MeterFunc

	// Interval is the time between two passes of [Reporter.Run]. The
	// default value is one hour.
	Interval time.Duration
	// Rate is the number of Stripe requests per second the reporter makes
	// at most, across its workers. The default value is 20 (Stripe's
	// test-mode limit is 25 requests per second, live mode 100). When
	// Stripe answers 429 (rate limited), the reporter halves its rate,
	// pauses every call for RateLimitPause (doubling while 429s go on),
	// retries the call up to three times, and regains the rate by a tenth
	// with each success.
	Rate float64
	// RateLimitPause is how long all calls pause after Stripe answers 429.
	// The default value is one second.
	RateLimitPause time.Duration
	// Burst is the number of requests that may go out at once after an
	// idle time. The default value is 1.
	Burst int
	// Concurrency is the number of subjects reported at once by a pass.
	// The default value is 4.
	Concurrency int
	// CallTimeout is the deadline of each Stripe call, stripe-go's own
	// network retries included. The default value is 20 seconds; it must
	// be at most half of LeaseTTL.
	CallTimeout time.Duration
	// LeaseTTL is how long a reporter holds a subject's lease. A reporter
	// stops reporting the subject before four fifths of it have passed, so
	// it never makes a Stripe call on an expired lease. The default value
	// is two minutes.
	LeaseTTL time.Duration
	// FlushWait is how long [Reporter.Flush] waits for a lease another
	// reporter holds. The default value is ten seconds.
	FlushWait time.Duration
	// MaxLateness is how long after a period's end its usage is still
	// reported. The default value is 34 days: one day less than
	// quota.DefaultRetention, the time quota keeps a counter after its
	// period ends (Stripe also refuses meter events older than 35 days).
	// With a quota Config.Retention other than the default, keep
	// MaxLateness plus Settle below it, or a late report reads an expired
	// counter as zero.
	MaxLateness time.Duration
	// Settle is how long after a period's end its counter is taken as
	// final; a settled, fully reported period's counter is not read
	// again. The default value is five minutes.
	Settle time.Duration
	// Retention is how long after a period's end its watermark is kept. It
	// must exceed MaxLateness plus Settle, so that no period is reported
	// again after its watermark expired. The default value is 45 days.
	Retention time.Duration
	// BackoffMin and BackoffMax bound the exponential backoff of a
	// subject whose reports fail: it is skipped by periodic passes (not by
	// [Reporter.Flush]) until the backoff has passed. The default values
	// are one minute and one hour.
	BackoffMin, BackoffMax time.Duration
	// IdentifierPrefix starts every report identifier and Idempotency-Key.
	// The default value is "billkit".
	IdentifierPrefix string
	// Logger receives the reporter's outcomes. The default value is
	// slog.Default().
	Logger *slog.Logger
	// Now is the clock. The default value is time.Now.
	Now func() time.Time
}

func (c ReporterConfig) withDefaults() (ReporterConfig, error) {
	switch {
	case c.Entitlements == nil:
		return c, fmt.Errorf("%w: reporter needs an entitlement store", ErrInvalidConfig)
	case c.Counters == nil:
		return c, fmt.Errorf("%w: reporter needs a counter store", ErrInvalidConfig)
	case c.MeterEvents == nil && c.UsageRecords == nil:
		return c, fmt.Errorf("%w: reporter needs a usage sink (MeterEvents or UsageRecords)", ErrInvalidConfig)
	case c.MeterEvents != nil && c.MeterEvents.Mode() != ReportDeltas:
		return c, fmt.Errorf("%w: MeterEvents sink has mode %v, want deltas", ErrInvalidConfig, c.MeterEvents.Mode())
	case c.UsageRecords != nil && c.UsageRecords.Mode() != ReportTotals:
		return c, fmt.Errorf("%w: UsageRecords sink has mode %v, want totals", ErrInvalidConfig, c.UsageRecords.Mode())
	case c.Watermarks == nil:
		return c, fmt.Errorf("%w: reporter needs a watermark store", ErrInvalidConfig)
	case c.Leases == nil:
		return c, fmt.Errorf("%w: reporter needs a lease store", ErrInvalidConfig)
	case c.Meter == nil && c.Plans == nil:
		return c, fmt.Errorf("%w: reporter needs a plan catalog or a meter function", ErrInvalidConfig)
	}
	if c.Meter == nil {
		c.Meter = PlanMeters(c.Plans, "")
	}
	for _, p := range c.Plans.All() {
		switch {
		case p.MeterEventName != "" && c.MeterEvents == nil:
			return c, fmt.Errorf("%w: plan %q bills meter events but the reporter has no MeterEvents sink", ErrInvalidConfig, p.Tier)
		case p.MeterEventName == "" && p.MeteredPriceID != "" && c.UsageRecords == nil:
			return c, fmt.Errorf("%w: plan %q bills usage records but the reporter has no UsageRecords sink", ErrInvalidConfig, p.Tier)
		}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.Interval, time.Hour)
	def(&c.CallTimeout, 20*time.Second)
	def(&c.LeaseTTL, 2*time.Minute)
	def(&c.FlushWait, 10*time.Second)
	def(&c.MaxLateness, quota.DefaultRetention-24*time.Hour)
	def(&c.Settle, 5*time.Minute)
	def(&c.Retention, 45*24*time.Hour)
	def(&c.BackoffMin, time.Minute)
	def(&c.BackoffMax, time.Hour)
	def(&c.RateLimitPause, time.Second)
	if c.Rate == 0 {
		c.Rate = 20
	}
	if c.Burst == 0 {
		c.Burst = 1
	}
	if c.Concurrency == 0 {
		c.Concurrency = 4
	}
	if c.IdentifierPrefix == "" {
		c.IdentifierPrefix = "billkit"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	switch {
	case c.Interval < 0, c.CallTimeout < 0, c.LeaseTTL < 0, c.FlushWait < 0, c.MaxLateness < 0,
		c.Settle < 0, c.Retention < 0, c.BackoffMin < 0, c.BackoffMax < 0, c.RateLimitPause < 0:
		return c, fmt.Errorf("%w: reporter durations must not be negative", ErrInvalidConfig)
	case c.Rate < 0 || c.Burst < 0 || c.Concurrency < 0:
		return c, fmt.Errorf("%w: reporter rate, burst and concurrency must not be negative", ErrInvalidConfig)
	case c.CallTimeout > c.LeaseTTL/2:
		return c, fmt.Errorf("%w: reporter CallTimeout must be at most half of LeaseTTL", ErrInvalidConfig)
	case c.Retention <= c.MaxLateness+c.Settle:
		return c, fmt.Errorf("%w: reporter Retention must exceed MaxLateness plus Settle", ErrInvalidConfig)
	case c.BackoffMax < c.BackoffMin:
		return c, fmt.Errorf("%w: reporter BackoffMax must be at least BackoffMin", ErrInvalidConfig)
	case len(c.IdentifierPrefix) > 50:
		return c, fmt.Errorf("%w: reporter IdentifierPrefix is longer than 50 bytes", ErrInvalidConfig)
	}
	return c, nil
}

// ReporterStats describes a [Reporter]'s last pass and its totals.
type ReporterStats struct {
	// LastRun is when the last completed pass started; zero before the
	// first.
	LastRun time.Time
	// LastDuration is how long the last pass took.
	LastDuration time.Duration
	// Subjects is the number of entitlements the last pass examined.
	Subjects int
	// Reported is the number of subjects whose new usage Stripe
	// acknowledged in the last pass.
	Reported int
	// Failed is the number of subjects whose report failed in the last
	// pass.
	Failed int
	// Pending is the number of subjects the last pass left with usage not
	// yet reported: failed, backing off, or leased by another reporter.
	Pending int
	// Unbillable is the number of subjects of the last pass that have
	// counted usage the reporter cannot bill: an active, trialing or
	// past_due entitlement without a billing period, of a tier missing
	// from the catalog, without the Stripe customer or metered
	// subscription item its billing needs, or billed through a sink the
	// reporter lacks. Each is logged at ERROR every pass; none is skipped
	// in silence.
	Unbillable int
	// Passes is the number of passes completed.
	Passes uint64
	// Reports and Failures count the Stripe calls acknowledged and failed
	// since the reporter was created.
	Reports, Failures uint64
	// RateLimited counts Stripe's 429 answers since the reporter was
	// created.
	RateLimited uint64
}

// Reporter reports counted usage to Stripe, once and only once: see the
// package documentation, section "Usage reporting".
//
// A Reporter is safe for concurrent use; several Reporters, in one process
// or many, may run over the same subjects. Its zero value is not usable;
// create one with [NewReporter].
type Reporter struct {
	cfg    ReporterConfig
	bucket *tokenBucket
	log    *slog.Logger

	reports, failures, limited atomic.Uint64

	mu      sync.Mutex
	stats   ReporterStats
	backoff map[string]backoffState

	// fault, when set by tests, is called at each step of a report; an
	// error it returns aborts the report there, as a crash would.
	fault func(point string) error
}

type backoffState struct {
	failures int
	until    time.Time
}

// Fault points of a report, in order.
const (
	faultLoaded    = "loaded"    // lease held, counters read
	faultBegun     = "begun"     // in-flight record written
	faultSent      = "sent"      // Stripe acknowledged
	faultCommitted = "committed" // watermark written
)

// NewReporter returns a reporter for cfg.
func NewReporter(cfg ReporterConfig) (*Reporter, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Reporter{
		cfg:     c,
		bucket:  newTokenBucket(c.Rate, c.Burst, time.Now),
		log:     c.Logger,
		backoff: make(map[string]backoffState),
	}, nil
}

// Stats returns the outcome of the last pass and the reporter's totals.
func (r *Reporter) Stats() ReporterStats {
	r.mu.Lock()
	s := r.stats
	r.mu.Unlock()
	s.Reports, s.Failures, s.RateLimited = r.reports.Load(), r.failures.Load(), r.limited.Load()
	return s
}

// Run reports every subject now and then every Interval, until ctx ends;
// it then returns nil. A pass that fails (for example because the
// entitlement store is unreachable) is logged and retried at the next
// tick.
func (r *Reporter) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		if err := r.ReportAll(ctx); err != nil && ctx.Err() == nil {
			r.log.ErrorContext(ctx, "billing: usage report pass failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

type outcome int

const (
	outIdle outcome = iota
	outReported
	outFailed
	outBusy
	outBackoff
	outUnbillable
	nOutcomes
)

// ReportAll makes one pass over every entitlement, reporting the new usage
// of each subject's current and previous period. A subject's failure is
// logged, counted and backed off, and does not stop the pass; ReportAll
// returns an error only when the entitlements could not be listed.
func (r *Reporter) ReportAll(ctx context.Context) error {
	start, wall := r.cfg.Now(), time.Now()
	jobs := make(chan Entitlement)
	var counts [nOutcomes]atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < r.cfg.Concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range jobs {
				counts[r.pass(ctx, e)].Add(1)
			}
		}()
	}
	err := r.cfg.Entitlements.ForEach(ctx, func(e Entitlement) error {
		select {
		case jobs <- e:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	close(jobs)
	wg.Wait()

	var total int64
	for i := range counts {
		total += counts[i].Load()
	}
	s := ReporterStats{
		LastRun:      start,
		LastDuration: time.Since(wall),
		Subjects:     int(total),
		Reported:     int(counts[outReported].Load()),
		Failed:       int(counts[outFailed].Load()),
		Pending:      int(counts[outFailed].Load() + counts[outBusy].Load() + counts[outBackoff].Load()),
		Unbillable:   int(counts[outUnbillable].Load()),
	}
	r.mu.Lock()
	s.Passes = r.stats.Passes + 1
	r.stats = s
	r.mu.Unlock()
	r.log.InfoContext(ctx, "billing: usage report pass",
		"subjects", s.Subjects, "reported", s.Reported, "failed", s.Failed, "pending", s.Pending,
		"unbillable", s.Unbillable,
		"duration", s.LastDuration)
	if err != nil {
		return fmt.Errorf("billing: list entitlements: %w", err)
	}
	return nil
}

// pass reports one subject for a periodic pass, honouring its backoff.
func (r *Reporter) pass(ctx context.Context, e Entitlement) outcome {
	now := r.cfg.Now()
	r.mu.Lock()
	b, backing := r.backoff[e.Subject]
	r.mu.Unlock()
	if backing && now.Before(b.until) {
		return outBackoff
	}
	out, err := r.reportSubject(ctx, e, false)
	r.settle(ctx, e.Subject, err)
	return out
}

// settle records a subject's result in its backoff state.
func (r *Reporter) settle(ctx context.Context, subject string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		delete(r.backoff, subject)
		return
	}
	if errors.Is(err, ErrWatermarkMoved) {
		// Another reporter moved on: not this subject's failure.
		r.log.InfoContext(ctx, "billing: usage watermark moved", "subject", subject)
		return
	}
	b := r.backoff[subject]
	b.failures++
	d := r.cfg.BackoffMin
	for i := 1; i < b.failures && d < r.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, r.cfg.BackoffMax)
	b.until = r.cfg.Now().Add(d)
	r.backoff[subject] = b
	r.log.WarnContext(ctx, "billing: usage report failed", "subject", subject,
		"failures", b.failures, "retry_in", d, "err", err)
}

// Flush reports subject's new usage now, ignoring its backoff and waiting
// up to FlushWait for a lease another reporter holds (then it returns
// [ErrLeaseBusy]). It returns [ErrNotFound] for an unknown subject.
func (r *Reporter) Flush(ctx context.Context, subject string) error {
	e, err := r.cfg.Entitlements.Get(ctx, subject)
	if err != nil {
		return fmt.Errorf("billing: flush usage: %w", err)
	}
	out, err := r.reportSubject(ctx, e, true)
	r.settle(ctx, subject, err)
	if err == nil && out == outBusy {
		return ErrLeaseBusy
	}
	return err
}

// Register registers [Reporter.HandleInvoiceCreated] on h for
// invoice.created events.
func (r *Reporter) Register(h *webhook.Handler) {
	h.On(stripe.EventTypeInvoiceCreated, r.HandleInvoiceCreated)
}

// HandleInvoiceCreated is a webhook handler for invoice.created: it flushes
// the usage of the invoice's customer, so that it reaches Stripe before
// the invoice is finalized (about an hour later). It reads only the
// invoice's id and customer, so an invoice of another API version's shape
// is handled too. An invoice without a readable customer, or of a customer
// unknown to the entitlement store, is acknowledged and ignored; a failed
// flush returns an error, so Stripe delivers the event again.
func (r *Reporter) HandleInvoiceCreated(ctx context.Context, ev *stripe.Event) error {
	if ev == nil || ev.Data == nil || len(ev.Data.Raw) == 0 {
		return nil
	}
	customer := readCustomerID(ev.Data.Raw)
	if customer == "" {
		r.log.WarnContext(ctx, "billing: invoice.created without a readable customer ignored", "event_id", ev.ID)
		return nil
	}
	subject, err := r.cfg.Entitlements.SubjectByCustomer(ctx, customer)
	if errors.Is(err, ErrNotFound) {
		r.log.DebugContext(ctx, "billing: invoice of unknown customer", "event_id", ev.ID)
		return nil
	}
	if err != nil {
		return fmt.Errorf("billing: invoice customer: %w", err)
	}
	err = r.Flush(ctx, subject)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// periodState is one period of a subject, as read from the stores.
type periodState struct {
	period quota.Period
	wm     Watermark
	// used is the period's billable units: its counter less the units
	// the period's plan includes without reporting them.
	used int64
	read bool // used was read (false for a final period)
	// retried is set once the period was read again after its watermark
	// moved under the reporter.
	retried bool
}

func (ps *periodState) hasWork() bool {
	return ps.wm.InFlight != nil || (ps.read && ps.used > ps.wm.Reported)
}

// periods returns the periods of e still to consider at now: its
// PreviousPeriod and Period and, while a renewal has not been applied
// although Period has ended, the projected period that counts usage now
// (see [countingPeriod]). A projection contains now, so it is never
// settled and never marked final: its counter is read again once the
// renewal makes it the entitlement's Period.
func (r *Reporter) periods(e Entitlement, now time.Time) []quota.Period {
	var out []quota.Period
	cands := []quota.Period{e.PreviousPeriod, e.Period}
	if p, projected := countingPeriod(e, now); projected {
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

func (r *Reporter) load(ctx context.Context, e Entitlement, m UsageMeter, periods []quota.Period) ([]periodState, error) {
	wms, err := r.cfg.Watermarks.Load(ctx, e.Subject, m.Name, periods)
	if err != nil {
		return nil, err
	}
	out := make([]periodState, len(periods))
	for i, p := range periods {
		out[i] = periodState{period: p, wm: wms[i]}
		if wms[i].Final && wms[i].InFlight == nil {
			continue
		}
		u, err := r.cfg.Counters.Usage(ctx, e.Subject, m.Name, p)
		if err != nil {
			return nil, fmt.Errorf("billing: read usage: %w", err)
		}
		out[i].used, out[i].read = billable(u.Used, r.included(e, m, p)), true
	}
	return out, nil
}

// billable returns the units of a counter at used that are reported when
// the plan includes included units without reporting them.
func billable(used, included int64) int64 { return max(0, used-max(0, included)) }

// periodMeter returns the meter that bills period p of e: the meter of the
// tier p ended on (Entitlement.PreviousTier) for e's PreviousPeriod, m for
// any other period. It reports false when that tier bills no usage.
func (r *Reporter) periodMeter(e Entitlement, m UsageMeter, p quota.Period) (UsageMeter, bool) {
	if e.PreviousTier == "" || e.PreviousTier == e.Tier || !p.Start.Equal(e.PreviousPeriod.Start) {
		return m, true
	}
	pe := e
	pe.Tier = e.PreviousTier
	return r.cfg.Meter(pe)
}

// included returns the units of period p that its plan includes without
// reporting them (UsageMeter.Included of the tier p ended on).
func (r *Reporter) included(e Entitlement, m UsageMeter, p quota.Period) int64 {
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
// send, so idle subjects cost reads only.
func (r *Reporter) reportSubject(ctx context.Context, e Entitlement, flush bool) (outcome, error) {
	now := r.cfg.Now()
	m, ok := r.cfg.Meter(e)
	if !ok || m.Name == "" {
		if _, known := r.cfg.Plans.ByTier(e.Tier); r.cfg.Plans != nil && !known {
			return r.unbillable(ctx, e, quota.DefaultMeter, now, fmt.Sprintf("tier %q is not in the plan catalog", e.Tier))
		}
		return outIdle, nil
	}
	mode := m.mode()
	switch {
	case r.sink(mode) == nil:
		return r.unbillable(ctx, e, m.Name, now, fmt.Sprintf("its plan bills %s, and the reporter has no sink for them", mode.billing()))
	case mode == ReportTotals && e.MeteredItemID == "":
		return r.unbillable(ctx, e, m.Name, now, "its subscription has no item of the plan's metered price")
	case mode == ReportDeltas && e.CustomerID == "":
		return r.unbillable(ctx, e, m.Name, now, "it has no Stripe customer")
	case e.Period.IsZero():
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
	states, err := r.load(ctx, e, m, periods)
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
			k := WatermarkKey{Subject: e.Subject, Meter: m.Name, Period: ps.period}
			if _, err := r.cfg.Watermarks.Commit(ctx, k, WatermarkCommit{To: ps.used, Final: true}, r.expireAt(ps.period)); err != nil {
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
		if err := r.cfg.Leases.Release(rctx, e.Subject, token); err != nil {
			r.log.WarnContext(ctx, "billing: release report lease", "subject", e.Subject, "err", err)
		}
	}()
	lctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	if mode == ReportTotals {
		// A total must not be older than one a previous holder sent: read
		// the counters again now that the lease is ours. Deltas need no
		// second read: Begin and Commit compare-and-set the watermark, and
		// a stale in-flight record resent is deduplicated by Stripe.
		for i := range states {
			if !states[i].read {
				continue
			}
			u, err := r.cfg.Counters.Usage(lctx, e.Subject, m.Name, states[i].period)
			if err != nil {
				return outFailed, fmt.Errorf("billing: read usage: %w", err)
			}
			states[i].used = max(states[i].used, billable(u.Used, r.included(e, m, states[i].period)))
		}
	}
	if err := r.hit(faultLoaded); err != nil {
		return outFailed, err
	}
	sent := 0
	for i := 0; i < len(states); i++ {
		n, err := r.reportPeriod(lctx, e, m, &states[i], now)
		sent += n
		if errors.Is(err, ErrWatermarkMoved) && !states[i].retried {
			// Another reporter moved this watermark since it was read
			// (before the lease was ours): read it again and go on from
			// there, once.
			fresh, lerr := r.load(lctx, e, m, []quota.Period{states[i].period})
			if lerr != nil {
				return outFailed, lerr
			}
			states[i] = fresh[0]
			states[i].retried = true
			i--
			continue
		}
		if err != nil {
			return outFailed, err
		}
	}
	if sent == 0 {
		return outIdle, nil
	}
	return outReported, nil
}

// unbillable reports e as unbillable for reason when it is active, trialing
// or past_due and has counted units of meter in the periods quota counts it
// in (its calendar period when it has no billing period): it logs them at
// ERROR and returns outUnbillable. Otherwise e has nothing to bill.
func (r *Reporter) unbillable(ctx context.Context, e Entitlement, meter string, now time.Time, reason string) (outcome, error) {
	if !e.Status.live() {
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

// sink returns the sink of mode, nil when the reporter has none.
func (r *Reporter) sink(mode UsageMode) UsageSink {
	if mode == ReportTotals {
		return r.cfg.UsageRecords
	}
	return r.cfg.MeterEvents
}

// acquire takes subject's lease, waiting up to FlushWait when flush is
// set. The returned deadline is when the holder must stop: four fifths of
// the TTL after the attempt started, so it ends before the lease does.
func (r *Reporter) acquire(ctx context.Context, subject string, flush bool) (string, time.Time, bool, error) {
	giveUp := time.Now().Add(r.cfg.FlushWait)
	pause := 50 * time.Millisecond
	for {
		start := time.Now()
		tok, ok, err := r.cfg.Leases.Acquire(ctx, subject, r.cfg.LeaseTTL)
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

func (r *Reporter) hit(point string) error {
	if r.fault == nil {
		return nil
	}
	return r.fault(point)
}

// maxRateLimited is how many times one report is sent again after Stripe
// answered 429 before the report fails.
const maxRateLimited = 3

// send delivers one report within the rate limit and CallTimeout, through
// the sink of the report's meter. When Stripe answers 429 it slows the
// reporter down (see ReporterConfig.Rate) and sends the same report again,
// up to maxRateLimited times.
func (r *Reporter) send(ctx context.Context, rep UsageReport) error {
	mode := rep.Meter.mode()
	sink := r.sink(mode)
	if sink == nil {
		return fmt.Errorf("%w: no sink for %s", ErrReportInvalid, mode.billing())
	}
	for attempt := 0; ; attempt++ {
		if err := r.bucket.wait(ctx); err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
		err := sink.Report(cctx, rep)
		cancel()
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

// reportPeriod reports one period under the subject's lease and returns
// the number of reports Stripe acknowledged.
func (r *Reporter) reportPeriod(ctx context.Context, e Entitlement, m UsageMeter, ps *periodState, now time.Time) (int, error) {
	k := WatermarkKey{Subject: e.Subject, Meter: m.Name, Period: ps.period}
	exp := r.expireAt(ps.period)
	settled := r.settled(ps.period, now)
	base := UsageReport{
		Subject: e.Subject, CustomerID: e.CustomerID, SubscriptionItemID: e.MeteredItemID,
		Meter: m, Period: ps.period,
	}
	commit := func(c WatermarkCommit) error {
		ok, err := r.cfg.Watermarks.Commit(ctx, k, c, exp)
		if err != nil {
			return err
		}
		if !ok {
			return ErrWatermarkMoved
		}
		if c.To > ps.wm.Reported {
			ps.wm.Reported = c.To
		}
		ps.wm.InFlight = nil
		return r.hit(faultCommitted)
	}
	sent := 0
	switch m.mode() {
	case ReportDeltas:
		if f := ps.wm.InFlight; f != nil {
			// Resend exactly what may already have reached Stripe.
			rep := base
			rep.From, rep.To, rep.Identifier, rep.Timestamp = f.From, f.To, f.Identifier, f.Timestamp
			if err := r.send(ctx, rep); err != nil {
				return sent, err
			}
			sent++
			if err := r.hit(faultSent); err != nil {
				return sent, err
			}
			if err := commit(WatermarkCommit{Identifier: f.Identifier, To: f.To, Final: settled && ps.read && f.To == ps.used}); err != nil {
				return sent, err
			}
		}
		if !ps.read || ps.used <= ps.wm.Reported {
			return sent, nil
		}
		f := InFlight{
			From: ps.wm.Reported, To: ps.used,
			Timestamp: eventTime(ps.period, now),
		}
		f.Identifier = reportIdentifier(r.cfg.IdentifierPrefix, ReportDeltas, e.Subject, m.Name, ps.period, "", f.From, f.To)
		ok, err := r.cfg.Watermarks.Begin(ctx, k, f, exp)
		if err != nil {
			return sent, err
		}
		if !ok {
			return sent, ErrWatermarkMoved
		}
		if err := r.hit(faultBegun); err != nil {
			return sent, err
		}
		rep := base
		rep.From, rep.To, rep.Identifier, rep.Timestamp = f.From, f.To, f.Identifier, f.Timestamp
		if err := r.send(ctx, rep); err != nil {
			return sent, err
		}
		sent++
		if err := r.hit(faultSent); err != nil {
			return sent, err
		}
		return sent, commit(WatermarkCommit{Identifier: f.Identifier, To: f.To, Final: settled})

	default: // ReportTotals
		if ps.wm.InFlight != nil {
			return sent, fmt.Errorf("billing: watermark %s holds a delta report; the sink's mode changed", ps.period.ID())
		}
		if !ps.read || ps.used <= ps.wm.Reported {
			return sent, nil
		}
		rep := base
		rep.From, rep.To = ps.wm.Reported, ps.used
		rep.Timestamp = ps.period.Start.UTC()
		rep.Identifier = reportIdentifier(r.cfg.IdentifierPrefix, ReportTotals, e.Subject, m.Name, ps.period, e.MeteredItemID, 0, ps.used)
		if err := r.send(ctx, rep); err != nil {
			return sent, err
		}
		sent++
		if err := r.hit(faultSent); err != nil {
			return sent, err
		}
		return sent, commit(WatermarkCommit{To: ps.used, Final: settled})
	}
}
