package usage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/webhook"
)

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
	if obs := r.cfg.Observer.Pass; obs != nil && err == nil {
		s.Reports, s.Failures, s.RateLimited = r.reports.Load(), r.failures.Load(), r.limited.Load()
		obs(ctx, s)
	}
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
