package billing

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/billkit/billkit/quota"
)

// Defaults of [LimitsConfig].
const (
	// DefaultLimitsTTL is how long an entitlement read is reused: the bound
	// within which a change made by any process (a revocation, a renewal)
	// is enforced by every process.
	DefaultLimitsTTL = time.Second
	// DefaultMaxCached is the number of subjects whose entitlement is kept
	// in the cache before expired entries are swept.
	DefaultMaxCached = 100_000
)

// DefaultProvisional returns the default allowance of a pending subject
// (checkout completed, first invoice not yet paid): 100 units per UTC day,
// strictly capped. Provisional usage is counted in its own daily period and
// is not billed.
func DefaultProvisional() quota.Limits {
	return quota.Limits{Plan: "provisional", Included: 100, Hard: 100, Interval: quota.Day}
}

// LimitsConfig configures a [Limits]. Store and Plans are required; every
// other zero field means its documented default.
type LimitsConfig struct {
	// Store is read on a cache miss. Required.
	Store EntitlementStore
	// Plans gives each tier's limits. Required.
	Plans *Plans
	// TTL is how long an entitlement read from Store is reused. A change
	// in Store is enforced within TTL (plus one Store read) in every
	// process. The default value is [DefaultLimitsTTL] (1 second).
	TTL time.Duration
	// Provisional is the allowance of a pending subject. The zero value
	// means [DefaultProvisional]: 100 units per day, strictly capped.
	Provisional quota.Limits
	// MaxCached bounds the cache: past it, expired entries are dropped,
	// then (if still too many) every entry. The default value is
	// [DefaultMaxCached].
	MaxCached int
	// Now returns the current time (for cache expiry and grace ends). The
	// default value is time.Now.
	Now func() time.Time
}

func (c LimitsConfig) withDefaults() (LimitsConfig, error) {
	switch {
	case c.Store == nil:
		return c, fmt.Errorf("%w: Store is required", ErrInvalidConfig)
	case c.Plans == nil || len(c.Plans.list) == 0:
		return c, fmt.Errorf("%w: Plans is required", ErrInvalidConfig)
	case c.TTL < 0:
		return c, fmt.Errorf("%w: negative TTL", ErrInvalidConfig)
	case c.MaxCached < 0:
		return c, fmt.Errorf("%w: negative MaxCached", ErrInvalidConfig)
	case c.Provisional.Included < 0 || c.Provisional.Hard < 0 || c.Provisional.Soft < 0:
		return c, fmt.Errorf("%w: Provisional: negative limit", ErrInvalidConfig)
	}
	if c.TTL == 0 {
		c.TTL = DefaultLimitsTTL
	}
	if c.Provisional == (quota.Limits{}) {
		c.Provisional = DefaultProvisional()
	}
	if c.MaxCached == 0 {
		c.MaxCached = DefaultMaxCached
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}

// Limits is the [quota.LimitsSource] of subjects' entitlements. It answers
// from an in-process cache of entitlements, so the quota middleware's hot
// path stays at one Redis round trip; concurrent misses for one subject
// share one Store read. It maps an entitlement's status to limits:
//
//	active, trialing   the plan of Tier, counted over the billing Period
//	pending            the Provisional allowance
//	past_due           the plan of GraceTier until GraceUntil, then none
//	anything else      none: quota.ErrNoPlan
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
// Limits is safe for concurrent use; the zero value is not usable, call
// [NewLimits].
type Limits struct {
	cfg LimitsConfig

	mu    sync.Mutex
	cache map[string]cached
	calls map[string]*loadCall
}

var _ quota.LimitsSource = (*Limits)(nil)

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
}

// NewLimits returns a limits source, or an error wrapping ErrInvalidConfig.
func NewLimits(cfg LimitsConfig) (*Limits, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Limits{cfg: c, cache: map[string]cached{}, calls: map[string]*loadCall{}}, nil
}

// Limits returns what subject may use now, or an error wrapping
// quota.ErrNoPlan when it may use nothing.
func (l *Limits) Limits(ctx context.Context, subject string) (quota.Limits, error) {
	e, found, err := l.entitlement(ctx, subject)
	if err != nil {
		return quota.Limits{}, err
	}
	if !found {
		return quota.Limits{}, quota.ErrNoPlan
	}
	return l.For(e, l.cfg.Now())
}

// For maps an entitlement to the limits it grants at time now, without
// caching or reading the store.
func (l *Limits) For(e Entitlement, now time.Time) (quota.Limits, error) {
	switch e.Status {
	case StatusActive, StatusTrialing:
		if p, ok := l.cfg.Plans.ByTier(e.Tier); ok {
			period, _ := e.CountingPeriod(now)
			return p.Limits(period), nil
		}
	case StatusPending:
		return l.cfg.Provisional, nil
	case StatusPastDue:
		if now.Before(e.GraceUntil) {
			if p, ok := l.cfg.Plans.ByTier(firstNonEmpty(e.GraceTier, e.Tier)); ok {
				period, _ := e.CountingPeriod(now)
				return p.Limits(period), nil
			}
		}
	}
	return quota.Limits{}, quota.ErrNoPlan
}

// Invalidate drops subject's cached entitlement, so that this process reads
// it again on the next call (see Config.OnChange of [Lifecycle]).
func (l *Limits) Invalidate(subject string) {
	l.mu.Lock()
	delete(l.cache, subject)
	l.mu.Unlock()
}

func (l *Limits) entitlement(ctx context.Context, subject string) (Entitlement, bool, error) {
	now := l.cfg.Now()
	l.mu.Lock()
	if c, ok := l.cache[subject]; ok && now.Before(c.expires) {
		l.mu.Unlock()
		return c.ent, c.found, nil
	}
	if call, ok := l.calls[subject]; ok {
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
func (l *Limits) sweep(now time.Time) {
	for k, c := range l.cache {
		if !now.Before(c.expires) {
			delete(l.cache, k)
		}
	}
	if len(l.cache) >= l.cfg.MaxCached {
		clear(l.cache)
	}
}
