package usage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/quota"
	"github.com/billkit/billkit/webhook"
)

// Entitlements is what the reporter reads of the lifecycle's entitlement
// store; [billing.EntitlementStore] satisfies it.
type Entitlements interface {
	// Get returns subject's entitlement, or billing.ErrNotFound.
	Get(ctx context.Context, subject string) (billing.Entitlement, error)
	// SubjectByCustomer returns the subject of a Stripe customer, or
	// billing.ErrNotFound.
	SubjectByCustomer(ctx context.Context, customerID string) (string, error)
	// ForEach calls fn for every entitlement, never concurrently.
	ForEach(ctx context.Context, fn func(billing.Entitlement) error) error
}

// Counters is what the reporter reads of the quota middleware's counters;
// [quota.Store] satisfies it.
type Counters interface {
	// Usage returns subject's counted units of meter in period p.
	Usage(ctx context.Context, subject, meter string, p quota.Period) (quota.Usage, error)
}

// Config configures a [Reporter]. Entitlements, Counters, Plans and Stripe
// are required; every other zero field means its documented default.
type Config struct {
	// Entitlements lists the subjects to report and maps a Stripe
	// customer to its subject. Required.
	Entitlements Entitlements
	// Counters holds the usage counters to report (the quota
	// middleware's store). Required.
	Counters Counters
	// Plans is the plan catalog: each subject is billed by its tier's
	// plan, as meter events when the plan has a MeterEventName (the
	// default for new integrations), else as usage records to the
	// subscription item of its MeteredPriceID (accounts pinned before
	// 2025-03-31.basil); a plan with neither bills nothing. Required.
	Plans *billing.Plans
	// Stripe is the API client that meter events and usage records are
	// sent with; its MaxNetworkRetries apply. Required.
	Stripe *client.API
	// Redis keeps the watermarks (what Stripe acknowledged) and the
	// leases (one reporter per subject), on a Redis with persistence;
	// standalone, Sentinel or Cluster. The default value nil keeps them
	// in process memory: one reporter process only, and a restart
	// forgets what was reported (meter events would be sent again).
	Redis redis.UniversalClient
	// Prefix starts every Redis key. The default value is "billkit".
	Prefix string
	// Meter is the quota meter whose counters are reported. The default
	// value is quota.DefaultMeter.
	Meter string
	// MeterCustomerKey and MeterValueKey are the payload keys of a meter
	// event that carry the Stripe customer and the quantity, as the
	// billing meter is configured. The default values are
	// "stripe_customer_id" and "value", Stripe's defaults.
	MeterCustomerKey, MeterValueKey string

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
	// Burst is the number of requests that may go out at once after an
	// idle time. The default value is 1.
	Burst int
	// RateLimitPause is how long all calls pause after Stripe answers 429.
	// The default value is one second.
	RateLimitPause time.Duration
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
	// CounterRetention is how long the quota store keeps a counter after
	// its period ends: the quota Config.Retention. The default value is
	// quota.DefaultRetention (35 days). NewReporter refuses MaxLateness
	// plus Settle that reach it: a report after the counter expired would
	// read zero and lose the period's late usage.
	CounterRetention time.Duration
	// MaxLateness is how long after a period's end its usage is still
	// reported. The default value is one day less than CounterRetention
	// (Stripe also refuses meter events older than 35 days).
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
	// Now is the billing clock: periods, settling and backoff. The
	// default value is time.Now. Waits and lease deadlines use real time,
	// as Redis expires leases in real time.
	Now func() time.Time

	// Replacements for tests; nil means built from the fields above.
	watermarks watermarkStore
	leases     leaseStore
	meter      meterFunc
	sinks      [2]sink // by reportMode-1
}

func (c Config) withDefaults() (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return c, fmt.Errorf("%w: "+format, append([]any{billing.ErrInvalidConfig}, args...)...)
	}
	switch {
	case c.Entitlements == nil:
		return bad("reporter needs Entitlements")
	case c.Counters == nil:
		return bad("reporter needs Counters")
	case c.Plans == nil && c.meter == nil:
		return bad("reporter needs Plans")
	case c.Stripe == nil && (c.sinks[0] == nil || c.sinks[1] == nil):
		return bad("reporter needs Stripe")
	}
	if c.Prefix == "" {
		c.Prefix = billing.DefaultPrefix
	}
	if c.Meter == "" {
		c.Meter = quota.DefaultMeter
	}
	if c.meter == nil {
		c.meter = planMeters(c.Plans, c.Meter)
	}
	if c.MeterCustomerKey == "" {
		c.MeterCustomerKey = "stripe_customer_id"
	}
	if c.MeterValueKey == "" {
		c.MeterValueKey = "value"
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
	def(&c.CounterRetention, quota.DefaultRetention)
	def(&c.MaxLateness, c.CounterRetention-24*time.Hour)
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
	case c.Interval < 0, c.CallTimeout < 0, c.LeaseTTL < 0, c.FlushWait < 0, c.MaxLateness < 0, c.CounterRetention < 0,
		c.Settle < 0, c.Retention < 0, c.BackoffMin < 0, c.BackoffMax < 0, c.RateLimitPause < 0:
		return bad("reporter durations must not be negative")
	case c.Rate < 0 || c.Burst < 0 || c.Concurrency < 0:
		return bad("reporter Rate, Burst and Concurrency must not be negative")
	case c.CallTimeout > c.LeaseTTL/2:
		return bad("reporter CallTimeout must be at most half of LeaseTTL")
	case c.MaxLateness+c.Settle >= c.CounterRetention:
		return bad("reporter MaxLateness (%s) plus Settle (%s) must stay below CounterRetention (%s), the quota store's counter retention: a later report would read an expired counter",
			c.MaxLateness, c.Settle, c.CounterRetention)
	case c.Retention <= c.MaxLateness+c.Settle:
		return bad("reporter Retention must exceed MaxLateness plus Settle")
	case c.BackoffMax < c.BackoffMin:
		return bad("reporter BackoffMax must be at least BackoffMin")
	case len(c.IdentifierPrefix) > 50:
		return bad("reporter IdentifierPrefix is longer than 50 bytes")
	}
	if c.watermarks == nil || c.leases == nil {
		if c.Redis != nil {
			opts := redisOptions{Prefix: c.Prefix}
			if c.watermarks == nil {
				c.watermarks = newRedisWatermarks(c.Redis, opts)
			}
			if c.leases == nil {
				c.leases = newRedisLeases(c.Redis, opts)
			}
		} else {
			if c.watermarks == nil {
				c.watermarks = newMemoryWatermarks(c.Now)
			}
			if c.leases == nil {
				c.leases = newMemoryLeases(c.Now)
			}
		}
	}
	if c.sinks[reportTotals-1] == nil {
		c.sinks[reportTotals-1] = newUsageRecordSink(c.Stripe)
	}
	if c.sinks[reportDeltas-1] == nil {
		c.sinks[reportDeltas-1] = newMeterEventSink(c.Stripe, meterEventConfig{CustomerKey: c.MeterCustomerKey, ValueKey: c.MeterValueKey})
	}
	return c, nil
}

// Stats describes a [Reporter]'s last pass and its totals.
type Stats struct {
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
	// from the catalog, or without the Stripe customer or metered
	// subscription item its billing needs. Each is logged at ERROR every
	// pass; none is skipped in silence.
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
// package documentation.
//
// A Reporter is safe for concurrent use; several Reporters, in one process
// or many, may run over the same subjects when they share Config.Redis.
// Its zero value is not usable; create one with [NewReporter].
type Reporter struct {
	cfg    Config
	bucket *tokenBucket
	log    *slog.Logger

	reports, failures, limited atomic.Uint64

	mu      sync.Mutex
	stats   Stats
	backoff map[string]backoffState
}

type backoffState struct {
	failures int
	until    time.Time
}

// NewReporter returns a reporter for cfg, or an error wrapping
// billing.ErrInvalidConfig.
func NewReporter(cfg Config) (*Reporter, error) {
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
func (r *Reporter) Stats() Stats {
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
	jobs := make(chan billing.Entitlement)
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
	err := r.cfg.Entitlements.ForEach(ctx, func(e billing.Entitlement) error {
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
	s := Stats{
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
func (r *Reporter) pass(ctx context.Context, e billing.Entitlement) outcome {
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
	if errors.Is(err, errWatermarkMoved) {
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
	h.On(stripe.EventTypeInvoiceCreated, r.handleInvoiceCreated)
}

// handleInvoiceCreated is a webhook handler for invoice.created: it flushes
// the usage of the invoice's customer, so that it reaches Stripe before
// the invoice is finalized (about an hour later). It reads only the
// invoice's id and customer, so an invoice of another API version's shape
// is handled too. An invoice without a readable customer, or of a customer
// unknown to the entitlement store, is acknowledged and ignored; a failed
// flush returns an error, so Stripe delivers the event again.
func (r *Reporter) handleInvoiceCreated(ctx context.Context, ev *stripe.Event) error {
	if ev == nil || ev.Data == nil || len(ev.Data.Raw) == 0 {
		return nil
	}
	customer := customerOf(ev.Data.Raw)
	if customer == "" {
		r.log.WarnContext(ctx, "billing: invoice.created without a readable customer ignored", "event_id", ev.ID)
		return nil
	}
	subject, err := r.cfg.Entitlements.SubjectByCustomer(ctx, customer)
	if errors.Is(err, billing.ErrNotFound) {
		r.log.DebugContext(ctx, "billing: invoice of unknown customer", "event_id", ev.ID)
		return nil
	}
	if err != nil {
		return fmt.Errorf("billing: invoice customer: %w", err)
	}
	err = r.Flush(ctx, subject)
	if errors.Is(err, billing.ErrNotFound) {
		return nil
	}
	return err
}
