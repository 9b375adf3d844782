package billing

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/billkit/billkit/quota"
)

// Defaults of the limits cache (Config.LimitsTTL, Config.MaxCached).
const (
	defaultLimitsTTL = time.Second
	defaultMaxCached = 100_000
)

// defaultProvisional is the default allowance of a pending subject
// (checkout completed, first invoice not yet paid): 100 units per UTC day,
// strictly capped. Provisional usage is counted in its own daily period and
// is not billed.
func defaultProvisional() quota.Limits {
	return quota.Limits{Plan: "provisional", Included: 100, Hard: 100, Interval: quota.Day}
}

// LimitsCache is the [quota.LimitsSource] of subjects' entitlements. It answers
// from an in-process cache of entitlements, so the quota middleware's hot
// path stays at one Redis round trip; concurrent misses for one subject
// share one Store read. It maps an entitlement's status to limits:
//
//	active, trialing   the plan of Tier, counted over the billing Period
//	pending            the Provisional allowance (meter "requests" only)
//	past_due           the plan of GraceTier until GraceUntil, then none
//	anything else      none: quota.ErrNoPlan
//
// A plan answers for each of its meters ([Plan.Limits]); a meter it does
// not have gets the zero Limits, which allow nothing.
//
// Once an active, trialing or past_due entitlement's Period has ended and
// the renewal's event has not been applied yet (a late or lost webhook),
// the limits carry the projected next period instead: it starts exactly at
// Period.End, as Stripe's renewed period does, and ends one interval later
// (calendar months on the subscription's billing anchor for monthly and
// yearly prices, else the length of Period). Quota counters are keyed by
// their period's start, so the units counted meanwhile are the renewed
// period's and are reported with it; without the projection quota would
// count them in a calendar period no report reads.
//
// A subject without an entitlement has no plan either. Negative answers
// are cached like positive ones; Store errors are not cached. Grace ends
// are evaluated at each call, so they take effect on time.
//
// The lifecycle that owns the cache ([Lifecycle.Limits]) drops a subject's
// entry whenever it changes the subject's entitlement, so this process
// enforces a change at once; other processes do within Config.LimitsTTL.
//
// A LimitsCache is safe for concurrent use; the zero value is not usable,
// get one from [Lifecycle.Limits].
type LimitsCache struct {
	cfg limitsConfig

	mu    sync.Mutex
	cache map[string]cached
	calls map[string]*loadCall
}

var _ quota.LimitsSource = (*LimitsCache)(nil)

type cached struct {
	ent     Entitlement
	found   bool
	expires time.Time
}

type loadCall struct {
	done  chan struct{}
	ent   Entitlement
	found bool
	err   error
	// waiters counts the callers that joined the read (under l.mu), for
	// tests.
	waiters int
}

// limitsConfig is what a LimitsCache needs of the lifecycle's Config,
// defaults applied.
type limitsConfig struct {
	Store       EntitlementStore
	Plans       *Plans
	TTL         time.Duration
	Provisional quota.Limits
	MaxCached   int
	Now         func() time.Time
}

func newLimitsCache(c limitsConfig) *LimitsCache {
	return &LimitsCache{cfg: c, cache: map[string]cached{}, calls: map[string]*loadCall{}}
}

// Limits returns what subject may use of meter ("" means
// quota.DefaultMeter) now, or an error wrapping quota.ErrNoPlan when its
// entitlement grants nothing. A subject's plan answers for each of its
// meters (see [Plan.Limits]); a meter the plan does not have gets the zero
// Limits, which allow nothing. The Provisional allowance of a pending
// subject is of quota.DefaultMeter ("requests") only.
func (l *LimitsCache) Limits(ctx context.Context, subject, meter string) (quota.Limits, error) {
	e, found, err := l.entitlement(ctx, subject)
	if err != nil {
		return quota.Limits{}, err
	}
	if !found {
		return quota.Limits{}, quota.ErrNoPlan
	}
	return l.limitsFor(e, l.cfg.Now(), meter)
}

// What an entitlement grants at a time (see [LimitsCache.grantOf]).
const (
	grantNone        = iota // nothing: quota.ErrNoPlan
	grantPlan               // a plan of the catalog
	grantProvisional        // the Provisional allowance
)

// grantOf returns what e grants at time now: the plan of its tier (the
// grace tier's while past_due), the provisional allowance, or nothing.
func (l *LimitsCache) grantOf(e Entitlement, now time.Time) (Plan, int) {
	switch e.Status {
	case StatusActive, StatusTrialing:
		if p, ok := l.cfg.Plans.ByTier(e.Tier); ok {
			return p, grantPlan
		}
	case StatusPending:
		return Plan{}, grantProvisional
	case StatusPastDue:
		if now.Before(e.GraceUntil) {
			if p, ok := l.cfg.Plans.ByTier(firstNonEmpty(e.GraceTier, e.Tier)); ok {
				return p, grantPlan
			}
		}
	}
	return Plan{}, grantNone
}

// limitsFor maps an entitlement to the limits of meter it grants at time
// now, without caching or reading the store.
func (l *LimitsCache) limitsFor(e Entitlement, now time.Time, meter string) (quota.Limits, error) {
	switch p, g := l.grantOf(e, now); g {
	case grantPlan:
		period, _ := e.CountingPeriod(now)
		return p.Limits(meter, period), nil
	case grantProvisional:
		if meter == "" || meter == quota.DefaultMeter {
			return l.cfg.Provisional, nil
		}
		return quota.Limits{Plan: l.cfg.Provisional.Plan}, nil
	}
	return quota.Limits{}, quota.ErrNoPlan
}

// Invalidate drops subject's cached entitlement, so that this process reads
// it again on the next call (see Config.OnChange of [Lifecycle]).
func (l *LimitsCache) Invalidate(subject string) {
	l.mu.Lock()
	delete(l.cache, subject)
	l.mu.Unlock()
}

func (l *LimitsCache) entitlement(ctx context.Context, subject string) (Entitlement, bool, error) {
	now := l.cfg.Now()
	l.mu.Lock()
	if c, ok := l.cache[subject]; ok && now.Before(c.expires) {
		l.mu.Unlock()
		return c.ent, c.found, nil
	}
	if call, ok := l.calls[subject]; ok {
		call.waiters++
		l.mu.Unlock()
		select {
		case <-call.done:
			if call.err != nil && ctx.Err() == nil &&
				(errors.Is(call.err, context.Canceled) || errors.Is(call.err, context.DeadlineExceeded)) {
				// The read ended with its caller's context (a client
				// that hung up), not with ours: read again.
				return l.entitlement(ctx, subject)
			}
			return call.ent, call.found, call.err
		case <-ctx.Done():
			return Entitlement{}, false, ctx.Err()
		}
	}
	call := &loadCall{done: make(chan struct{})}
	l.calls[subject] = call
	l.mu.Unlock()

	call.ent, call.err = l.cfg.Store.Get(ctx, subject)
	call.found = call.err == nil
	if errors.Is(call.err, ErrNotFound) {
		call.err = nil
	}

	l.mu.Lock()
	delete(l.calls, subject)
	if call.err == nil {
		if len(l.cache) >= l.cfg.MaxCached {
			l.sweep(now)
		}
		// The entry expires TTL after the read began, so a change
		// stored before the read is seen by it, and one stored after it
		// within TTL.
		l.cache[subject] = cached{ent: call.ent, found: call.found, expires: now.Add(l.cfg.TTL)}
	}
	l.mu.Unlock()
	close(call.done)
	if call.err != nil {
		return Entitlement{}, false, fmt.Errorf("billing: read entitlement: %w", call.err)
	}
	return call.ent, call.found, nil
}

// sweep drops expired entries, or all of them when none had expired; l.mu
// is held.
func (l *LimitsCache) sweep(now time.Time) {
	for k, c := range l.cache {
		if !now.Before(c.expires) {
			delete(l.cache, k)
		}
	}
	if len(l.cache) >= l.cfg.MaxCached {
		clear(l.cache)
	}
}
