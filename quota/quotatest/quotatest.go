// Package quotatest is a conformance suite for implementations of
// [quota.Store]. billkit runs it against [quota.MemoryStore] and
// [quota.RedisStore] on miniredis, a real redis-server and a Redis Cluster;
// run it against your own store to check that it has the same semantics
// (atomic check and count, exact under concurrency; a Limit of 0 allows
// nothing and [quota.TakeRequest.Unlimited] lifts the cap; denied units
// apart from billable ones; billkit's subject and meter rules):
//
//	func TestMyStore(t *testing.T) {
//		quotatest.TestStore(t, quotatest.Options{New: func(t *testing.T) quota.Store { return newMyStore(t) }})
//	}
package quotatest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/billkit/billkit/internal/subject"
	"github.com/billkit/billkit/quota"
)

// Options configures [TestStore]. New is required, so the zero value is
// not usable; every other zero field means its documented default.
type Options struct {
	// New returns the store under test. It is called once per subtest;
	// it may return the same store every time, since every subtest uses
	// subjects of its own. Required.
	New func(t *testing.T) quota.Store
	// Goroutines and PerGoroutine size the concurrency test. The defaults
	// are 16 and 50.
	Goroutines, PerGoroutine int
	// Now is the time the suite's periods are built around; it must be
	// close to the store's clock so that expiries lie in the future. The
	// default is time.Now.
	Now func() time.Time
}

// TestStore runs the conformance suite. Its subtests run in parallel.
func TestStore(t *testing.T, o Options) {
	t.Helper()
	if o.New == nil {
		t.Fatal("quotatest: Options.New is required")
	}
	if o.Goroutines <= 0 {
		o.Goroutines = 16
	}
	if o.PerGoroutine <= 0 {
		o.PerGoroutine = 50
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := suite{o}
	for _, tc := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"CountsCost", s.countsCost},
		{"StrictLimit", s.strictLimit},
		{"DeniedIsNotBillable", s.deniedIsNotBillable},
		{"NoCap", s.noCap},
		{"ZeroLimitAllowsNothing", s.zeroLimit},
		{"Isolation", s.isolation},
		{"ClosedPeriodReadable", s.closedPeriodReadable},
		{"MissingCounterIsZero", s.missingIsZero},
		{"ConcurrentExact", s.concurrentExact},
		{"ConcurrentStrictLimit", s.concurrentStrictLimit},
		{"HugeCost", s.hugeCost},
		{"InvalidInput", s.invalidInput},
		{"CanceledContext", s.canceledContext},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t)
		})
	}
}

type suite struct{ o Options }

// Subject returns a subject unique to this run, valid in any store.
func Subject(t testing.TB) string {
	var b [6]byte
	rand.Read(b[:])
	name := strings.Map(func(r rune) rune {
		if r == '{' || r == '}' || r == '/' || r == ' ' {
			return '_'
		}
		return r
	}, t.Name())
	if len(name) > 80 {
		name = name[len(name)-80:]
	}
	return name + "-" + hex.EncodeToString(b[:])
}

func (s suite) period() quota.Period { return quota.CalendarPeriod(quota.Month, s.o.Now()) }

// req is a request with the hard limit limit (0 allows nothing).
func (s suite) req(subject string, cost, limit int64) quota.TakeRequest {
	p := s.period()
	return quota.TakeRequest{
		Subject: subject, Meter: "requests", Period: p,
		Cost: cost, Limit: limit, ExpireAt: p.End.Add(35 * 24 * time.Hour),
	}
}

// unlimited is a request without a hard limit.
func (s suite) unlimited(subject string, cost int64) quota.TakeRequest {
	r := s.req(subject, cost, 0)
	r.Unlimited = true
	return r
}

func take(t *testing.T, st quota.Store, req quota.TakeRequest) quota.TakeResult {
	t.Helper()
	res, err := st.Take(context.Background(), req)
	if err != nil {
		t.Fatalf("Take(%+v): %v", req, err)
	}
	return res
}

func usage(t *testing.T, st quota.Store, subject, meter string, p quota.Period) quota.Usage {
	t.Helper()
	u, err := st.Usage(context.Background(), subject, meter, p)
	if err != nil {
		t.Fatalf("Usage(%q, %q, %s): %v", subject, meter, p.ID(), err)
	}
	return u
}

func (s suite) countsCost(t *testing.T) {
	st, sub := s.o.New(t), Subject(t)
	var want int64
	for _, cost := range []int64{1, 1, 5, 100, 1} {
		want += cost
		res := take(t, st, s.unlimited(sub, cost))
		if !res.Allowed || res.Used != want {
			t.Fatalf("Take(cost %d) = %+v, want allowed with Used %d", cost, res, want)
		}
	}
	if got := usage(t, st, sub, "requests", s.period()); got != (quota.Usage{Used: want}) {
		t.Fatalf("Usage = %+v, want Used %d", got, want)
	}
}

func (s suite) strictLimit(t *testing.T) {
	st, sub := s.o.New(t), Subject(t)
	steps := []struct {
		cost    int64
		allowed bool
		used    int64
	}{
		{3, true, 3}, {3, true, 6}, {3, true, 9},
		{3, false, 9}, // 12 > 10
		{1, true, 10}, // exactly at the limit
		{1, false, 10},
	}
	for i, st2 := range steps {
		res := take(t, st, s.req(sub, st2.cost, 10))
		if res.Allowed != st2.allowed || res.Used != st2.used {
			t.Fatalf("step %d: Take(cost %d, limit 10) = %+v, want allowed=%v Used=%d", i, st2.cost, res, st2.allowed, st2.used)
		}
	}
	if got, want := usage(t, st, sub, "requests", s.period()), (quota.Usage{Used: 10, Denied: 4}); got != want {
		t.Fatalf("Usage = %+v, want %+v", got, want)
	}
}

func (s suite) deniedIsNotBillable(t *testing.T) {
	st, sub := s.o.New(t), Subject(t)
	allowed := 0
	for i := 0; i < 7; i++ {
		if take(t, st, s.req(sub, 1, 2)).Allowed {
			allowed++
		}
	}
	if allowed != 2 {
		t.Fatalf("allowed %d of 7 with limit 2, want 2", allowed)
	}
	if got, want := usage(t, st, sub, "requests", s.period()), (quota.Usage{Used: 2, Denied: 5}); got != want {
		t.Fatalf("Usage = %+v, want %+v (denied units must not be billable)", got, want)
	}
}

func (s suite) noCap(t *testing.T) {
	st, sub := s.o.New(t), Subject(t)
	for i := 1; i <= 20; i++ {
		if res := take(t, st, s.unlimited(sub, 1000)); !res.Allowed || res.Used != int64(i)*1000 {
			t.Fatalf("Take %d with no cap = %+v", i, res)
		}
	}
}

// zeroLimit: a Limit of 0 without Unlimited allows nothing, whatever the
// count; the denied units are counted apart, never as billable.
func (s suite) zeroLimit(t *testing.T) {
	st, sub := s.o.New(t), Subject(t)
	take(t, st, s.unlimited(sub, 4))
	for i, cost := range []int64{1, 1, 7} {
		if res := take(t, st, s.req(sub, cost, 0)); res.Allowed || res.Used != 4 {
			t.Fatalf("Take %d (cost %d, limit 0) = %+v, want denied with Used 4", i, cost, res)
		}
	}
	fresh := Subject(t)
	if res := take(t, st, s.req(fresh, 1, 0)); res.Allowed || res.Used != 0 {
		t.Fatalf("Take(cost 1, limit 0) on a new counter = %+v, want denied with Used 0", res)
	}
	if got, want := usage(t, st, sub, "requests", s.period()), (quota.Usage{Used: 4, Denied: 9}); got != want {
		t.Fatalf("Usage = %+v, want %+v", got, want)
	}
	if got, want := usage(t, st, fresh, "requests", s.period()), (quota.Usage{Denied: 1}); got != want {
		t.Fatalf("Usage of the new counter = %+v, want %+v", got, want)
	}
}

func (s suite) isolation(t *testing.T) {
	st, a, b := s.o.New(t), Subject(t), Subject(t)
	p := s.period()
	next := quota.CalendarPeriod(quota.Month, p.End)
	take(t, st, s.unlimited(a, 1))
	r := s.unlimited(a, 2)
	r.Meter = "tokens"
	take(t, st, r)
	r = s.unlimited(b, 4)
	take(t, st, r)
	r = s.unlimited(a, 8)
	r.Period, r.ExpireAt = next, next.End.Add(time.Hour)
	take(t, st, r)
	for _, c := range []struct {
		subject, meter string
		p              quota.Period
		want           int64
	}{
		{a, "requests", p, 1}, {a, "tokens", p, 2}, {b, "requests", p, 4}, {a, "requests", next, 8}, {b, "tokens", p, 0},
	} {
		if got := usage(t, st, c.subject, c.meter, c.p); got.Used != c.want {
			t.Errorf("Usage(%s, %s, %s).Used = %d, want %d", c.subject, c.meter, c.p.ID(), got.Used, c.want)
		}
	}
}

func (s suite) closedPeriodReadable(t *testing.T) {
	st, sub := s.o.New(t), Subject(t)
	// A day-long explicit period that ended an hour ago, kept for a week.
	now := s.o.Now()
	closed := quota.Period{Start: now.Add(-25 * time.Hour).Truncate(time.Second), End: now.Add(-time.Hour).Truncate(time.Second)}
	r := s.unlimited(sub, 7)
	r.Period, r.ExpireAt = closed, now.Add(7*24*time.Hour)
	take(t, st, r)
	if got := usage(t, st, sub, "requests", closed); got.Used != 7 {
		t.Fatalf("Usage of a closed period = %+v, want Used 7", got)
	}
}

func (s suite) missingIsZero(t *testing.T) {
	st := s.o.New(t)
	if got := usage(t, st, Subject(t), "requests", s.period()); got != (quota.Usage{}) {
		t.Fatalf("Usage of a missing counter = %+v, want zero", got)
	}
}

func (s suite) run(t *testing.T, st quota.Store, req quota.TakeRequest) (allowed, errs int64) {
	var wg sync.WaitGroup
	var a, e atomic.Int64
	for g := 0; g < s.o.Goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < s.o.PerGoroutine; i++ {
				res, err := st.Take(context.Background(), req)
				if err != nil {
					e.Add(1)
					continue
				}
				if res.Allowed {
					a.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return a.Load(), e.Load()
}

func (s suite) concurrentExact(t *testing.T) {
	st, sub := s.o.New(t), Subject(t)
	n := int64(s.o.Goroutines * s.o.PerGoroutine)
	allowed, errs := s.run(t, st, s.unlimited(sub, 1))
	if errs != 0 || allowed != n {
		t.Fatalf("allowed %d with %d errors, want %d and 0", allowed, errs, n)
	}
	if got := usage(t, st, sub, "requests", s.period()); got != (quota.Usage{Used: n}) {
		t.Fatalf("Usage = %+v, want Used %d", got, n)
	}
}

func (s suite) concurrentStrictLimit(t *testing.T) {
	st, sub := s.o.New(t), Subject(t)
	n := int64(s.o.Goroutines * s.o.PerGoroutine)
	limit := n / 3
	allowed, errs := s.run(t, st, s.req(sub, 1, limit))
	if errs != 0 || allowed != limit {
		t.Fatalf("allowed %d with %d errors under limit %d, want exactly %d", allowed, errs, limit, limit)
	}
	if got, want := usage(t, st, sub, "requests", s.period()), (quota.Usage{Used: limit, Denied: n - limit}); got != want {
		t.Fatalf("Usage = %+v, want %+v", got, want)
	}
}

// hugeCost: a cost near the int64 range must not wrap around and slip
// under the limit.
func (s suite) hugeCost(t *testing.T) {
	st, sub := s.o.New(t), Subject(t)
	take(t, st, s.req(sub, 1, 10))
	if res, err := st.Take(context.Background(), s.req(sub, math.MaxInt64, 10)); err == nil && (res.Allowed || res.Used != 1) {
		t.Fatalf("Take(cost MaxInt64, limit 10) after 1 = %+v, want denied with Used 1 (or an error)", res)
	}
	if got := usage(t, st, sub, "requests", s.period()); got.Used != 1 {
		t.Fatalf("Usage = %+v, want Used 1", got)
	}
}

func (s suite) invalidInput(t *testing.T) {
	st, sub := s.o.New(t), Subject(t)
	good := s.unlimited(sub, 1)
	for _, c := range []struct {
		name string
		edit func(*quota.TakeRequest)
		want error
	}{
		{"empty subject", func(r *quota.TakeRequest) { r.Subject = "" }, quota.ErrInvalidSubject},
		{"open brace", func(r *quota.TakeRequest) { r.Subject = sub + "{x" }, quota.ErrInvalidSubject},
		{"close brace", func(r *quota.TakeRequest) { r.Subject = sub + "}" }, quota.ErrInvalidSubject},
		{"overlong subject", func(r *quota.TakeRequest) { r.Subject = strings.Repeat("a", subject.MaxLen+1) }, quota.ErrInvalidSubject},
		{"control character in subject", func(r *quota.TakeRequest) { r.Subject = sub + "\n" }, quota.ErrInvalidSubject},
		{"invalid UTF-8 in subject", func(r *quota.TakeRequest) { r.Subject = sub + "\xff" }, quota.ErrInvalidSubject},
		{"empty meter", func(r *quota.TakeRequest) { r.Meter = "" }, quota.ErrInvalidMeter},
		{"meter with colon", func(r *quota.TakeRequest) { r.Meter = "a:b" }, quota.ErrInvalidMeter},
		{"zero cost", func(r *quota.TakeRequest) { r.Cost = 0 }, quota.ErrInvalidCost},
		{"negative cost", func(r *quota.TakeRequest) { r.Cost = -5 }, quota.ErrInvalidCost},
		{"negative limit", func(r *quota.TakeRequest) { r.Limit = -1 }, quota.ErrInvalidRequest},
		{"limit on an unlimited request", func(r *quota.TakeRequest) { r.Limit = 10 }, quota.ErrInvalidRequest},
		{"empty period", func(r *quota.TakeRequest) { r.Period = quota.Period{} }, quota.ErrInvalidRequest},
		{"expiry before period end", func(r *quota.TakeRequest) { r.ExpireAt = r.Period.End.Add(-time.Second) }, quota.ErrInvalidRequest},
	} {
		r := good
		c.edit(&r)
		if _, err := st.Take(context.Background(), r); !errors.Is(err, c.want) {
			t.Errorf("%s: Take error = %v, want %v", c.name, err, c.want)
		}
	}
	if _, err := st.Usage(context.Background(), "a{b}", "requests", s.period()); !errors.Is(err, quota.ErrInvalidSubject) {
		t.Errorf("Usage with a brace in the subject: error = %v, want ErrInvalidSubject", err)
	}
	if got := usage(t, st, sub, "requests", s.period()); got != (quota.Usage{}) {
		t.Fatalf("after rejected requests Usage = %+v, want nothing counted", got)
	}
}

func (s suite) canceledContext(t *testing.T) {
	st, sub := s.o.New(t), Subject(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := st.Take(ctx, s.unlimited(sub, 1)); err == nil {
		t.Fatal("Take with a canceled context succeeded, want an error")
	}
}
