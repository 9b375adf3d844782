package quota

import (
	"context"
	"math"
	"sync"
	"time"
)

// MemoryOptions configures a [MemoryStore]. The zero value is ready to use.
type MemoryOptions struct {
	// Now is the store's clock, used to expire counters. The default is
	// time.Now. Give it the same clock as [Config.Now].
	Now func() time.Time
	// SweepInterval is how often, by the store's clock, expired counters
	// are removed from memory; each sweep is O(counters) and runs inside
	// a Take. The default is one minute.
	SweepInterval time.Duration
}

func (o *MemoryOptions) withDefaults() MemoryOptions {
	out := *o
	if out.Now == nil {
		out.Now = time.Now
	}
	if out.SweepInterval <= 0 {
		out.SweepInterval = time.Minute
	}
	return out
}

// MemoryStore is a [Store] that keeps counters in process memory, for tests,
// examples and single-instance deployments. It has the same semantics as
// [RedisStore]: atomic check and count, denied units apart from used units,
// expiry no earlier than [TakeRequest.ExpireAt] and never shortened. Expired
// counters read as zero and are removed by a periodic sweep, so memory stays
// bounded by the counters that are live.
//
// A MemoryStore is safe for concurrent use. Its zero value is an empty store
// using time.Now; use [NewMemoryStore] to set options.
type MemoryStore struct {
	mu        sync.Mutex
	opts      MemoryOptions
	inited    bool
	nextSweep time.Time
	m         map[memKey]*memCounter
}

var _ Store = (*MemoryStore)(nil)

type memKey struct {
	subject, meter string
	start          int64 // period start, Unix seconds: the same identity as Period.ID
}

type memCounter struct {
	used, denied int64
	expireAt     time.Time
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore(opts MemoryOptions) *MemoryStore {
	return &MemoryStore{opts: opts.withDefaults(), inited: true, m: make(map[memKey]*memCounter)}
}

// init prepares a zero-value store; s.mu must be held.
func (s *MemoryStore) init() {
	if !s.inited {
		s.opts = s.opts.withDefaults()
		s.m = make(map[memKey]*memCounter)
		s.inited = true
	}
}

// Take implements [Store].
func (s *MemoryStore) Take(ctx context.Context, req TakeRequest) (TakeResult, error) {
	if err := req.validate(); err != nil {
		return TakeResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return TakeResult{}, err
	}
	k := memKey{req.Subject, req.Meter, req.Period.Start.Unix()}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	now := s.opts.Now()
	s.sweep(now)
	c := s.m[k]
	if c == nil || !now.Before(c.expireAt) {
		c = &memCounter{}
		s.m[k] = c
	}
	// Written so that no sum can wrap around: c.used and c.denied are
	// never negative, and an increment past the int64 range is an error,
	// as Redis's HINCRBY makes it.
	allowed := req.Unlimited || req.Cost <= req.Limit-c.used
	n := &c.denied
	if allowed {
		n = &c.used
	}
	if *n > math.MaxInt64-req.Cost {
		return TakeResult{}, ErrCounterOverflow
	}
	*n += req.Cost
	if req.ExpireAt.After(c.expireAt) {
		c.expireAt = req.ExpireAt
	}
	return TakeResult{Allowed: allowed, Used: c.used}, nil
}

// Usage implements [Store].
func (s *MemoryStore) Usage(ctx context.Context, subject, meter string, period Period) (Usage, error) {
	if err := validateUsage(subject, meter); err != nil {
		return Usage{}, err
	}
	if err := ctx.Err(); err != nil {
		return Usage{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	c := s.m[memKey{subject, meter, period.Start.Unix()}]
	if c == nil || !s.opts.Now().Before(c.expireAt) {
		return Usage{}, nil
	}
	return Usage{Used: c.used, Denied: c.denied}, nil
}

// counters returns the number of counters held, including expired ones
// that the next sweep will remove.
func (s *MemoryStore) counters() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// sweep removes expired counters when the sweep interval has passed; s.mu
// must be held.
func (s *MemoryStore) sweep(now time.Time) {
	if now.Before(s.nextSweep) {
		return
	}
	s.nextSweep = now.Add(s.opts.SweepInterval)
	for k, c := range s.m {
		if !now.Before(c.expireAt) {
			delete(s.m, k)
		}
	}
}
