package usage

import (
	"context"
	"sync"
	"time"

	"github.com/billkit/billkit/quota"
)

// watermark is what Stripe has acknowledged of one subject's meter in one
// period. The zero value means nothing was reported yet.
type watermark struct {
	// Reported is the number of the period's units Stripe acknowledged.
	Reported int64
	// inFlight is the delta report written down before it was sent and not
	// yet acknowledged, or nil. It is resent, unchanged, before anything
	// else is reported for the period.
	inFlight *inFlight
	// Final is set once the period is closed, settled, and fully reported:
	// its counter is no longer read.
	Final bool
}

// inFlight is a delta report that may or may not have reached Stripe.
type inFlight struct {
	// From and To delimit the units [From, To) of the report.
	From, To int64
	// Identifier is the report's meter event identifier.
	Identifier string
	// Timestamp is the report's event time.
	Timestamp time.Time
}

// wmKey names one watermark.
type wmKey struct {
	// Subject is the subject whose usage is reported.
	Subject string
	// Meter is the quota meter reported (meterSpec.Name).
	Meter string
	// Period is the billing period; its [quota.Period.ID] names the
	// watermark.
	Period quota.Period
}

// wmCommit records Stripe's acknowledgement of a report.
type wmCommit struct {
	// Identifier is the in-flight report acknowledged, or "" for a
	// [reportTotals] report (which has no in-flight record).
	Identifier string
	// To is the number of units now acknowledged; Reported becomes
	// max(Reported, To).
	To int64
	// Final marks the period as fully reported.
	Final bool
}

// watermarkStore keeps watermarks. Every write sets the watermark's expiry
// to expireAt, so no watermark lives forever. Implementations must be safe
// for concurrent use; errors mean the store could not answer.
type watermarkStore interface {
	// Load returns the watermarks of subject's meter for each of periods,
	// in order. A missing watermark is the zero watermark.
	Load(ctx context.Context, subject, meter string, periods []quota.Period) ([]watermark, error)
	// Begin writes f as k's in-flight report if k has none and its
	// Reported equals f.From, and reports whether it did. A false result
	// means another reporter moved the watermark first.
	Begin(ctx context.Context, k wmKey, f inFlight, expireAt time.Time) (bool, error)
	// Commit records c and reports whether it applied: when c.Identifier
	// is set it applies only if it names k's in-flight report (which it
	// clears); when it is empty it applies only if k has no in-flight
	// report.
	Commit(ctx context.Context, k wmKey, c wmCommit, expireAt time.Time) (bool, error)
}

// Compile-time interface checks.
var (
	_ watermarkStore = (*memoryWatermarks)(nil)
	_ watermarkStore = (*redisWatermarks)(nil)
)

// memoryWatermarks is a [watermarkStore] in process memory, for tests
// and single-process use: its watermarks are lost when the process ends.
// It is safe for concurrent use. Its zero value is ready to use with the
// system clock.
type memoryWatermarks struct {
	// Now is the clock that expires watermarks. Nil means time.Now.
	Now func() time.Time

	mu sync.Mutex
	m  map[string]memWatermark
}

type memWatermark struct {
	wm       watermark
	expireAt time.Time
}

// newMemoryWatermarks returns an empty store that reads time from now
// (nil means time.Now).
func newMemoryWatermarks(now func() time.Time) *memoryWatermarks {
	return &memoryWatermarks{Now: now}
}

func (s *memoryWatermarks) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func memWatermarkKey(subject, meter string, p quota.Period) string {
	return subject + "\x00" + meter + "\x00" + p.ID()
}

// get returns the live watermark at key; s.mu is held.
func (s *memoryWatermarks) get(key string) watermark {
	e, ok := s.m[key]
	if !ok {
		return watermark{}
	}
	if !s.now().Before(e.expireAt) {
		delete(s.m, key)
		return watermark{}
	}
	w := e.wm
	if w.inFlight != nil {
		f := *w.inFlight
		w.inFlight = &f
	}
	return w
}

func (s *memoryWatermarks) put(key string, w watermark, expireAt time.Time) {
	if s.m == nil {
		s.m = make(map[string]memWatermark)
	}
	s.m[key] = memWatermark{wm: w, expireAt: expireAt}
}

// Load implements [watermarkStore].
func (s *memoryWatermarks) Load(ctx context.Context, subject, meter string, periods []quota.Period) ([]watermark, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]watermark, len(periods))
	for i, p := range periods {
		out[i] = s.get(memWatermarkKey(subject, meter, p))
	}
	return out, nil
}

// Begin implements [watermarkStore].
func (s *memoryWatermarks) Begin(ctx context.Context, k wmKey, f inFlight, expireAt time.Time) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := memWatermarkKey(k.Subject, k.Meter, k.Period)
	w := s.get(key)
	if w.inFlight != nil || w.Reported != f.From {
		return false, nil
	}
	w.inFlight = &f
	s.put(key, w, expireAt)
	return true, nil
}

// Commit implements [watermarkStore].
func (s *memoryWatermarks) Commit(ctx context.Context, k wmKey, c wmCommit, expireAt time.Time) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := memWatermarkKey(k.Subject, k.Meter, k.Period)
	w := s.get(key)
	if c.Identifier != "" {
		if w.inFlight == nil || w.inFlight.Identifier != c.Identifier {
			return false, nil
		}
		w.inFlight = nil
	} else if w.inFlight != nil {
		return false, nil
	}
	if c.To > w.Reported {
		w.Reported = c.To
	}
	if c.Final {
		w.Final = true
	}
	s.put(key, w, expireAt)
	return true, nil
}

// Len returns the number of live watermarks.
func (s *memoryWatermarks) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k := range s.m {
		if s.m[k].expireAt.After(s.now()) {
			n++
		}
	}
	return n
}
