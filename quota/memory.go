package quota

import (
	"context"
	"math"
	"sync"
	"time"
)

// MemoryOptions configures a [MemoryStore]. The zero value is ready to use.
type MemoryOptions struct {
	// Now is the store's clock, used to expire counters, holds and take
	// records. The default is time.Now. Give it the same clock as
	// [Config.Now].
	Now func() time.Time
	// SweepInterval is how often, by the store's clock, expired counters
	// and take records are removed from memory; each sweep is
	// O(counters + records) and runs inside a call. The default is one
	// minute.
	SweepInterval time.Duration
	// RefundWindow is how long a take is remembered for [Store.Refund],
	// as in [RedisOptions]. The default is [DefaultRefundWindow].
	RefundWindow time.Duration
}

func (o *MemoryOptions) withDefaults() MemoryOptions {
	out := *o
	if out.Now == nil {
		out.Now = time.Now
	}
	if out.SweepInterval <= 0 {
		out.SweepInterval = time.Minute
	}
	if out.RefundWindow <= 0 {
		out.RefundWindow = DefaultRefundWindow
	}
	return out
}

// MemoryStore is a [Store] that keeps counters in process memory, for tests,
// examples and single-instance deployments. It has the same semantics as
// [RedisStore]: atomic check and count of every meter of a take, denied
// units apart from used units, holds released when settled or expired,
// takes remembered for refunds, expiry no earlier than
// [TakeRequest.ExpireAt] and never shortened. Expired counters read as
// zero and are removed by a periodic sweep, so memory stays bounded by the
// counters that are live.
//
// A MemoryStore is safe for concurrent use. Its zero value is an empty store
// using time.Now; use [NewMemoryStore] to set options.
type MemoryStore struct {
	mu        sync.Mutex
	opts      MemoryOptions
	inited    bool
	nextSweep time.Time
	m         map[memKey]*memCounter
	records   map[memRecordKey]memRecord
}

var _ Store = (*MemoryStore)(nil)

type memKey struct {
	subject, meter string
	start          int64 // period start, Unix seconds: the same identity as Period.ID
}

type memCounter struct {
	used, denied, reserved int64
	expireAt               time.Time
	holds                  map[string]memHold // by take ID
	nextHoldExpiry         time.Time          // no hold expires before it
}

type memHold struct {
	amount int64
	until  time.Time
}

type memRecordKey struct{ subject, id string }

// memRecord is what a take left: 'a' allowed, 'd' denied, 'r' refunded.
type memRecord struct {
	state    byte
	expireAt time.Time
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore(opts MemoryOptions) *MemoryStore {
	s := &MemoryStore{opts: opts}
	s.init()
	return s
}

// init prepares a zero-value store; s.mu must be held (or s unshared).
func (s *MemoryStore) init() {
	if !s.inited {
		s.opts = s.opts.withDefaults()
		s.m = make(map[memKey]*memCounter)
		s.records = make(map[memRecordKey]memRecord)
		s.inited = true
	}
}

// lock locks s, prepares it and sweeps it; it returns the store's time.
func (s *MemoryStore) lock() time.Time {
	s.mu.Lock()
	s.init()
	now := s.opts.Now()
	s.sweep(now)
	return now
}

// live returns the counter of k if it exists and has not expired, with
// its expired holds released.
func (s *MemoryStore) live(k memKey, now time.Time) *memCounter {
	c := s.m[k]
	if c == nil || !now.Before(c.expireAt) {
		return nil
	}
	c.prune(now)
	return c
}

// counter returns the live counter of k, or a new one in its place.
func (s *MemoryStore) counter(k memKey, now time.Time) *memCounter {
	if c := s.live(k, now); c != nil {
		return c
	}
	c := &memCounter{}
	s.m[k] = c
	return c
}

// prune releases the holds whose time has come (until <= now), as the
// Redis scripts do.
func (c *memCounter) prune(now time.Time) {
	if len(c.holds) == 0 || now.Before(c.nextHoldExpiry) {
		return
	}
	var next time.Time
	for id, h := range c.holds {
		if !now.Before(h.until) {
			c.reserved -= h.amount
			delete(c.holds, id)
		} else if next.IsZero() || h.until.Before(next) {
			next = h.until
		}
	}
	c.nextHoldExpiry = next
}

func (c *memCounter) extend(expireAt time.Time) {
	if expireAt.After(c.expireAt) {
		c.expireAt = expireAt
	}
}

// memMeter is one meter of a take.
type memMeter struct {
	key       memKey
	amount    int64
	limit     int64
	unlimited bool
	expireAt  time.Time
	ttl       time.Duration // 0 for the request meter
}

func (req *TakeRequest) memMeter(i int) memMeter {
	if i < 0 {
		return memMeter{memKey{req.Subject, req.Meter, req.Period.Start.Unix()}, req.Cost, req.Limit, req.Unlimited, req.ExpireAt, 0}
	}
	h := &req.Reserve[i]
	return memMeter{memKey{req.Subject, h.Meter, h.Period.Start.Unix()}, h.Amount, h.Limit, h.Unlimited, h.ExpireAt, h.TTL}
}

// fits reports whether amount fits under limit beside used and reserved,
// none of them negative, without overflowing.
func fits(amount, limit, used, reserved int64) bool {
	avail := limit - used // >= -MaxInt64
	return reserved <= avail && amount <= avail-reserved
}

// ResolvesLostTakes implements [LostTakeResolver]: a take on a MemoryStore
// is never lost (it either runs, or fails before it counts anything).
func (s *MemoryStore) ResolvesLostTakes() bool { return true }

// Take implements [Store].
func (s *MemoryStore) Take(ctx context.Context, req TakeRequest) (TakeResult, error) {
	if err := req.validate(); err != nil {
		return TakeResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return TakeResult{}, err
	}
	now := s.lock()
	defer s.mu.Unlock()
	rk := memRecordKey{req.Subject, req.ID}
	if req.ID != "" {
		if r, ok := s.records[rk]; ok && now.Before(r.expireAt) {
			return TakeResult{}, ErrDuplicateTake
		}
	}
	res := TakeResult{Allowed: true}
	if len(req.Reserve) > 0 {
		res.Holds = make([]HoldResult, len(req.Reserve))
	}
	// Each meter's counter is looked up once (nil: none yet). Nothing is
	// changed before every meter has been checked, but for releasing
	// expired holds.
	var buf [4]*memCounter
	cs := buf[:0]
	for i := -1; i < len(req.Reserve); i++ {
		mm := req.memMeter(i)
		c := s.live(mm.key, now)
		cs = append(cs, c)
		var used, reserved int64
		if c != nil {
			used, reserved = c.used, c.reserved
		}
		if i < 0 {
			res.Used, res.Reserved = used, reserved
		} else {
			res.Holds[i] = HoldResult{Used: used, Reserved: reserved}
		}
		if res.Allowed && !mm.unlimited && !fits(mm.amount, mm.limit, used, reserved) {
			res.Allowed, res.Exhausted = false, mm.key.meter
		}
	}
	// Written so that no sum can wrap around: an increment past the
	// int64 range is an error, as Redis's HINCRBY makes it.
	for i, c := range cs {
		if c == nil {
			continue
		}
		n := c.denied
		switch {
		case !res.Allowed:
		case i == 0:
			n = c.used
		default:
			n = c.reserved
		}
		if n > math.MaxInt64-req.memMeter(i-1).amount {
			return TakeResult{}, ErrCounterOverflow
		}
	}
	for i, c := range cs {
		mm := req.memMeter(i - 1)
		if c == nil {
			c = &memCounter{}
			s.m[mm.key] = c
		}
		switch {
		case !res.Allowed:
			c.denied += mm.amount
		case i == 0:
			c.used += mm.amount
			res.Used = c.used
		default:
			c.reserved += mm.amount
			if c.holds == nil {
				c.holds = make(map[string]memHold)
			}
			until := now.Add(mm.ttl)
			c.holds[req.ID] = memHold{amount: mm.amount, until: until}
			if len(c.holds) == 1 || until.Before(c.nextHoldExpiry) {
				c.nextHoldExpiry = until
			}
			res.Holds[i-1].Reserved = c.reserved
		}
		c.extend(mm.expireAt)
	}
	if req.ID != "" {
		st := byte('a')
		if !res.Allowed {
			st = 'd'
		}
		s.records[rk] = memRecord{state: st, expireAt: now.Add(s.opts.RefundWindow)}
	}
	return res, nil
}

// Settle implements [Store].
func (s *MemoryStore) Settle(ctx context.Context, req TakeRequest, used []int64) error {
	if err := validateSettle(&req, used); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.lock()
	defer s.mu.Unlock()
	for i := range req.Reserve {
		mm := req.memMeter(i)
		if c := s.live(mm.key, now); c != nil && c.used > math.MaxInt64-used[i] {
			return ErrCounterOverflow
		}
	}
	for i := range req.Reserve {
		mm := req.memMeter(i)
		c := s.live(mm.key, now)
		if c != nil {
			if h, ok := c.holds[req.ID]; ok && h.amount == mm.amount {
				c.reserved -= h.amount
				delete(c.holds, req.ID)
			}
		}
		if used[i] > 0 {
			if c == nil {
				c = s.counter(mm.key, now)
			}
			c.used += used[i]
		}
		if c != nil {
			c.extend(mm.expireAt)
		}
	}
	return nil
}

// Refund implements [Store].
func (s *MemoryStore) Refund(ctx context.Context, req TakeRequest) error {
	if err := validateRefund(&req); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.lock()
	defer s.mu.Unlock()
	rk := memRecordKey{req.Subject, req.ID}
	var old byte
	if r, ok := s.records[rk]; ok && now.Before(r.expireAt) {
		old = r.state
	}
	s.records[rk] = memRecord{state: 'r', expireAt: now.Add(s.opts.RefundWindow)}
	if old != 'a' && old != 'd' {
		return nil
	}
	for i := -1; i < len(req.Reserve); i++ {
		mm := req.memMeter(i)
		c := s.live(mm.key, now)
		switch {
		case c == nil:
		case old == 'd':
			c.denied -= mm.amount
		case i < 0:
			c.used -= mm.amount
		default:
			if h, ok := c.holds[req.ID]; ok && h.amount == mm.amount {
				c.reserved -= h.amount
				delete(c.holds, req.ID)
			}
		}
	}
	return nil
}

// Usage implements [Store].
func (s *MemoryStore) Usage(ctx context.Context, subject, meter string, period Period) (Usage, error) {
	if err := validateUsage(subject, meter); err != nil {
		return Usage{}, err
	}
	if err := ctx.Err(); err != nil {
		return Usage{}, err
	}
	now := s.lock()
	defer s.mu.Unlock()
	c := s.live(memKey{subject, meter, period.Start.Unix()}, now)
	if c == nil {
		return Usage{}, nil
	}
	return Usage{Used: c.used, Denied: c.denied, Reserved: c.reserved}, nil
}

// counters returns the number of counters held, including expired ones
// that the next sweep will remove.
func (s *MemoryStore) counters() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// sweep removes expired counters and take records when the sweep
// interval has passed; s.mu must be held.
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
	for k, r := range s.records {
		if !now.Before(r.expireAt) {
			delete(s.records, k)
		}
	}
}
