// Package quotatest is a conformance suite for implementations of
// [quota.Store]. billkit runs it against [quota.MemoryStore] and
// [quota.RedisStore] on miniredis, a real redis-server and a Redis Cluster;
// run it against your own store to check that it has the same semantics
// (atomic check and count of every meter of a take, exact under
// concurrency; a Limit of 0 allows nothing and
// [quota.TakeRequest.Unlimited] lifts the cap; denied units apart from
// billable ones; holds that count against the limit until they are
// settled, exactly, or expire, never billed; refunds that undo a take or
// wait for it as a tombstone; billkit's subject and meter rules):
//
//	func TestMyStore(t *testing.T) {
//		clk := newFakeClock()
//		quotatest.TestStore(t, quotatest.Options{
//			New:     func(t *testing.T) quota.Store { return newMyStore(t, clk.Now) },
//			Now:     clk.Now,
//			Advance: clk.Add,
//		})
//	}
package quotatest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"math"
	mrand "math/rand/v2"
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
	// Advance moves the store's clock (the one that dates holds, such as
	// [quota.MemoryOptions.Now] or [quota.RedisOptions.Now]) forward by
	// d, and Now with it. The subtests of expiring holds need it; without
	// it they are skipped. They run before the others, which run in
	// parallel, so that no other subtest sees the clock move.
	Advance func(d time.Duration)
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
	// Sequential, before the parallel subtests start: they move the clock.
	for _, tc := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"HoldExpires", s.holdExpires},
		{"ExpiredHoldNeverBilled", s.expiredHoldNeverBilled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if o.Advance == nil {
				t.Skip("quotatest: Options.Advance is not set")
			}
			tc.fn(t)
		})
	}
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
		{"ReserveAndSettle", s.reserveAndSettle},
		{"SettleZeroReleases", s.settleZero},
		{"SettleMoreCountsExcess", s.settleExcess},
		{"HoldDenied", s.holdDenied},
		{"RequestMeterDeniedWithHolds", s.requestDeniedWithHolds},
		{"HoldsCountAgainstLimit", s.holdsCountAgainstLimit},
		{"RefundAllowed", s.refundAllowed},
		{"RefundDenied", s.refundDenied},
		{"RefundBeforeTake", s.refundBeforeTake},
		{"DuplicateID", s.duplicateID},
		{"ConcurrentReserveSettle", s.concurrentReserveSettle},
		{"ConcurrentReserveLimit", s.concurrentReserveLimit},
		{"InvalidReservations", s.invalidReservations},
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

// holdTTL is the TTL of the suite's holds that are not meant to expire.
const holdTTL = time.Hour

// reserve is s.req with an ID and one hold of amount units of "tokens"
// under limit (a negative limit: no cap).
func (s suite) reserve(subject, id string, cost, limit, amount, tokenLimit int64) quota.TakeRequest {
	r := s.req(subject, cost, limit)
	if limit < 0 {
		r.Limit, r.Unlimited = 0, true
	}
	r.ID = id
	h := quota.Hold{Meter: "tokens", Period: r.Period, Amount: amount, Limit: tokenLimit, ExpireAt: r.ExpireAt, TTL: holdTTL}
	if tokenLimit < 0 {
		h.Limit, h.Unlimited = 0, true
	}
	r.Reserve = []quota.Hold{h}
	return r
}

// ID returns a take ID unique to this run.
func ID(t testing.TB) string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func settle(t *testing.T, st quota.Store, req quota.TakeRequest, used ...int64) {
	t.Helper()
	if err := st.Settle(context.Background(), req, used); err != nil {
		t.Fatalf("Settle(%v): %v", used, err)
	}
}

func refund(t *testing.T, st quota.Store, req quota.TakeRequest) {
	t.Helper()
	if err := st.Refund(context.Background(), req); err != nil {
		t.Fatalf("Refund: %v", err)
	}
}

// wantUsage checks the counter of subject's meter.
func (s suite) wantUsage(t *testing.T, st quota.Store, subject, meter string, want quota.Usage) {
	t.Helper()
	if got := usage(t, st, subject, meter, s.period()); got != want {
		t.Fatalf("Usage(%s) = %+v, want %+v", meter, got, want)
	}
}

func (s suite) reserveAndSettle(t *testing.T) {
	st, sub := s.o.New(t), Subject(t)
	req := s.reserve(sub, ID(t), 1, 10, 100, 1000)
	res := take(t, st, req)
	if !res.Allowed || res.Used != 1 || res.Exhausted != "" || len(res.Holds) != 1 || res.Holds[0] != (quota.HoldResult{Reserved: 100}) {
		t.Fatalf("Take with a hold of 100 = %+v, want allowed, Used 1, one hold with Reserved 100", res)
	}
	s.wantUsage(t, st, sub, "tokens", quota.Usage{Reserved: 100})
	s.wantUsage(t, st, sub, "requests", quota.Usage{Used: 1})
	settle(t, st, req, 40)
	s.wantUsage(t, st, sub, "tokens", quota.Usage{Used: 40})
	// A second take sees the settled count.
	res = take(t, st, s.reserve(sub, ID(t), 1, 10, 100, 1000))
	if !res.Allowed || res.Holds[0] != (quota.HoldResult{Used: 40, Reserved: 100}) {
		t.Fatalf("second Take = %+v, want allowed with Used 40, Reserved 100", res)
	}
}

// settleZero: settling nothing releases the whole hold, which then fits
// again.
func (s suite) settleZero(t *testing.T) {
	st, sub := s.o.New(t), Subject(t)
	req := s.reserve(sub, ID(t), 1, -1, 100, 100)
	take(t, st, req)
	if res := take(t, st, s.reserve(sub, ID(t), 1, -1, 1, 100)); res.Allowed || res.Exhausted != "tokens" {
		t.Fatalf("Take of 1 beside a hold of the whole limit = %+v, want denied by tokens", res)
	}
	settle(t, st, req, 0)
	s.wantUsage(t, st, sub, "tokens", quota.Usage{Denied: 1})
	if res := take(t, st, s.reserve(sub, ID(t), 1, -1, 100, 100)); !res.Allowed {
		t.Fatalf("Take of the whole limit after settling 0 = %+v, want allowed", res)
	}
}

// settleExcess: settling more than reserved counts the excess, past the
// hard limit: the only way past it, and by the excess only.
func (s suite) settleExcess(t *testing.T) {
	st, sub := s.o.New(t), Subject(t)
	req := s.reserve(sub, ID(t), 1, -1, 100, 100)
	take(t, st, req)
	settle(t, st, req, 130)
	s.wantUsage(t, st, sub, "tokens", quota.Usage{Used: 130})
	if res := take(t, st, s.reserve(sub, ID(t), 1, -1, 1, 100)); res.Allowed || res.Exhausted != "tokens" || res.Holds[0].Used != 130 {
		t.Fatalf("Take after an excess settle = %+v, want denied by tokens, Used 130", res)
	}
	s.wantUsage(t, st, sub, "tokens", quota.Usage{Used: 130, Denied: 1})
	// The request meter counted the allowed request only.
	s.wantUsage(t, st, sub, "requests", quota.Usage{Used: 1, Denied: 1})
}

// holdDenied: a hold that does not fit denies the request: nothing is
// billable or held, each meter's amount goes to its denied counter.
func (s suite) holdDenied(t *testing.T) {
	st, sub := s.o.New(t), Subject(t)
	res := take(t, st, s.reserve(sub, ID(t), 1, 10, 60, 50))
	if res.Allowed || res.Exhausted != "tokens" || res.Used != 0 || len(res.Holds) != 1 || res.Holds[0] != (quota.HoldResult{}) {
		t.Fatalf("Take with a hold of 60 under 50 = %+v, want denied by tokens, nothing counted", res)
	}
	s.wantUsage(t, st, sub, "requests", quota.Usage{Denied: 1})
	s.wantUsage(t, st, sub, "tokens", quota.Usage{Denied: 60})
}

func (s suite) requestDeniedWithHolds(t *testing.T) {
	st, sub := s.o.New(t), Subject(t)
	take(t, st, s.req(sub, 2, 2))
	res := take(t, st, s.reserve(sub, ID(t), 1, 2, 10, 1000))
	if res.Allowed || res.Exhausted != "requests" || res.Used != 2 {
		t.Fatalf("Take over the request meter's limit = %+v, want denied by requests, Used 2", res)
	}
	s.wantUsage(t, st, sub, "requests", quota.Usage{Used: 2, Denied: 1})
	s.wantUsage(t, st, sub, "tokens", quota.Usage{Denied: 10})
}

// holdsCountAgainstLimit: units held count against the meter's limit for
// plain takes of that meter too.
func (s suite) holdsCountAgainstLimit(t *testing.T) {
	st, sub := s.o.New(t), Subject(t)
	take(t, st, s.reserve(sub, ID(t), 1, -1, 80, 100))
	plain := s.req(sub, 30, 100)
	plain.Meter = "tokens"
	if res := take(t, st, plain); res.Allowed || res.Reserved != 80 {
		t.Fatalf("plain Take of 30 beside 80 held under 100 = %+v, want denied with Reserved 80", res)
	}
	plain.Cost = 20
	if res := take(t, st, plain); !res.Allowed || res.Used != 20 || res.Reserved != 80 {
		t.Fatalf("plain Take of 20 beside 80 held under 100 = %+v, want allowed, Used 20, Reserved 80", res)
	}
}

func (s suite) refundAllowed(t *testing.T) {
	st, sub := s.o.New(t), Subject(t)
	req := s.reserve(sub, ID(t), 3, 10, 100, 1000)
	take(t, st, req)
	refund(t, st, req)
	s.wantUsage(t, st, sub, "requests", quota.Usage{})
	s.wantUsage(t, st, sub, "tokens", quota.Usage{})
	refund(t, st, req) // a second refund changes nothing
	s.wantUsage(t, st, sub, "requests", quota.Usage{})
	if _, err := st.Take(context.Background(), req); !errors.Is(err, quota.ErrDuplicateTake) {
		t.Fatalf("Take of a refunded ID: error %v, want ErrDuplicateTake", err)
	}
	s.wantUsage(t, st, sub, "requests", quota.Usage{})
	s.wantUsage(t, st, sub, "tokens", quota.Usage{})
	// Other takes are untouched.
	other := s.reserve(sub, ID(t), 1, 10, 5, 1000)
	take(t, st, other)
	refund(t, st, s.reserve(sub, ID(t), 1, 10, 5, 1000)) // never taken
	s.wantUsage(t, st, sub, "requests", quota.Usage{Used: 1})
	s.wantUsage(t, st, sub, "tokens", quota.Usage{Reserved: 5})
}

func (s suite) refundDenied(t *testing.T) {
	st, sub := s.o.New(t), Subject(t)
	req := s.reserve(sub, ID(t), 1, 0, 10, 1000)
	if res := take(t, st, req); res.Allowed {
		t.Fatalf("Take under limit 0 = %+v, want denied", res)
	}
	refund(t, st, req)
	s.wantUsage(t, st, sub, "requests", quota.Usage{})
	s.wantUsage(t, st, sub, "tokens", quota.Usage{})
}

// refundBeforeTake: a refund that arrives before its take (the take still
// on its way) leaves a tombstone: the take counts nothing.
func (s suite) refundBeforeTake(t *testing.T) {
	st, sub := s.o.New(t), Subject(t)
	req := s.reserve(sub, ID(t), 1, 10, 100, 1000)
	refund(t, st, req)
	if res, err := st.Take(context.Background(), req); !errors.Is(err, quota.ErrDuplicateTake) {
		t.Fatalf("Take after its refund = %+v, %v; want ErrDuplicateTake", res, err)
	}
	s.wantUsage(t, st, sub, "requests", quota.Usage{})
	s.wantUsage(t, st, sub, "tokens", quota.Usage{})
}

func (s suite) duplicateID(t *testing.T) {
	st, sub := s.o.New(t), Subject(t)
	req := s.req(sub, 1, 10)
	req.ID = ID(t)
	take(t, st, req)
	if _, err := st.Take(context.Background(), req); !errors.Is(err, quota.ErrDuplicateTake) {
		t.Fatalf("second Take of one ID: error %v, want ErrDuplicateTake", err)
	}
	s.wantUsage(t, st, sub, "requests", quota.Usage{Used: 1})
	// The same ID under another subject is another take.
	req.Subject = Subject(t)
	take(t, st, req)
}

// concurrentReserveSettle: concurrent reserve/settle pairs add up to
// exactly what was settled.
func (s suite) concurrentReserveSettle(t *testing.T) {
	st, sub := s.o.New(t), Subject(t)
	var sum atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < s.o.Goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(g), 13))
			for i := 0; i < s.o.PerGoroutine; i++ {
				req := s.reserve(sub, ID(t), 1, -1, 100, -1)
				if res, err := st.Take(context.Background(), req); err != nil || !res.Allowed {
					t.Errorf("Take = %+v, %v; want allowed", res, err)
					return
				}
				n := rng.Int64N(101)
				if err := st.Settle(context.Background(), req, []int64{n}); err != nil {
					t.Errorf("Settle: %v", err)
					return
				}
				sum.Add(n)
			}
		}()
	}
	wg.Wait()
	n := int64(s.o.Goroutines * s.o.PerGoroutine)
	s.wantUsage(t, st, sub, "requests", quota.Usage{Used: n})
	s.wantUsage(t, st, sub, "tokens", quota.Usage{Used: sum.Load()})
}

// concurrentReserveLimit: under a hard limit, concurrent holds never let
// what is used and held pass it, and settles within the holds keep the
// settled total under it.
func (s suite) concurrentReserveLimit(t *testing.T) {
	st, sub := s.o.New(t), Subject(t)
	limit := int64(s.o.Goroutines*s.o.PerGoroutine) * 100 / 4
	var sum, allowed atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < s.o.Goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(g), 17))
			for i := 0; i < s.o.PerGoroutine; i++ {
				req := s.reserve(sub, ID(t), 1, -1, 100, limit)
				res, err := st.Take(context.Background(), req)
				if err != nil {
					t.Errorf("Take: %v", err)
					return
				}
				if !res.Allowed {
					continue
				}
				allowed.Add(1)
				if h := res.Holds[0]; h.Used+h.Reserved > limit {
					t.Errorf("after an allowed hold: used %d + reserved %d > limit %d", h.Used, h.Reserved, limit)
				}
				n := rng.Int64N(101)
				if err := st.Settle(context.Background(), req, []int64{n}); err != nil {
					t.Errorf("Settle: %v", err)
					return
				}
				sum.Add(n)
			}
		}()
	}
	wg.Wait()
	u := usage(t, st, sub, "tokens", s.period())
	if u.Used != sum.Load() || u.Reserved != 0 || u.Used > limit {
		t.Fatalf("Usage(tokens) = %+v after settling %d; want Used %d <= %d and nothing held", u, sum.Load(), sum.Load(), limit)
	}
	if allowed.Load() < limit/100 {
		t.Fatalf("%d holds of 100 allowed under %d, want at least %d", allowed.Load(), limit, limit/100)
	}
}

func (s suite) invalidReservations(t *testing.T) {
	st, sub := s.o.New(t), Subject(t)
	good := s.reserve(sub, ID(t), 1, 10, 5, 100)
	for _, c := range []struct {
		name string
		edit func(*quota.TakeRequest)
		want error
	}{
		{"hold without ID", func(r *quota.TakeRequest) { r.ID = "" }, quota.ErrInvalidRequest},
		{"ID with colon", func(r *quota.TakeRequest) { r.ID = "a:b" }, quota.ErrInvalidRequest},
		{"ID with brace", func(r *quota.TakeRequest) { r.ID = "a{b" }, quota.ErrInvalidRequest},
		{"overlong ID", func(r *quota.TakeRequest) { r.ID = strings.Repeat("a", quota.MaxIDLen+1) }, quota.ErrInvalidRequest},
		{"hold on the request meter", func(r *quota.TakeRequest) { r.Reserve[0].Meter = "requests" }, quota.ErrInvalidRequest},
		{"two holds on one meter", func(r *quota.TakeRequest) { r.Reserve = append(r.Reserve, r.Reserve[0]) }, quota.ErrInvalidRequest},
		{"hold meter with colon", func(r *quota.TakeRequest) { r.Reserve[0].Meter = "a:b" }, quota.ErrInvalidMeter},
		{"zero amount", func(r *quota.TakeRequest) { r.Reserve[0].Amount = 0 }, quota.ErrInvalidRequest},
		{"zero TTL", func(r *quota.TakeRequest) { r.Reserve[0].TTL = 0 }, quota.ErrInvalidRequest},
		{"hold expiry before period end", func(r *quota.TakeRequest) { r.Reserve[0].ExpireAt = r.Period.End.Add(-time.Second) }, quota.ErrInvalidRequest},
		{"hold with empty period", func(r *quota.TakeRequest) { r.Reserve[0].Period = quota.Period{} }, quota.ErrInvalidRequest},
	} {
		r := good
		r.Reserve = append([]quota.Hold(nil), good.Reserve...)
		c.edit(&r)
		if _, err := st.Take(context.Background(), r); !errors.Is(err, c.want) {
			t.Errorf("%s: Take error = %v, want %v", c.name, err, c.want)
		}
	}
	take(t, st, good)
	for _, c := range []struct {
		name string
		used []int64
	}{{"no amounts", nil}, {"two amounts for one hold", []int64{1, 2}}, {"negative amount", []int64{-1}}} {
		if err := st.Settle(context.Background(), good, c.used); !errors.Is(err, quota.ErrInvalidRequest) {
			t.Errorf("Settle with %s: error = %v, want ErrInvalidRequest", c.name, err)
		}
	}
	noHolds := good
	noHolds.Reserve = nil
	if err := st.Settle(context.Background(), noHolds, nil); !errors.Is(err, quota.ErrInvalidRequest) {
		t.Errorf("Settle without holds: error = %v, want ErrInvalidRequest", err)
	}
	noID := s.req(sub, 1, 10)
	if err := st.Refund(context.Background(), noID); !errors.Is(err, quota.ErrInvalidRequest) {
		t.Errorf("Refund without ID: error = %v, want ErrInvalidRequest", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := st.Settle(ctx, good, []int64{1}); err == nil {
		t.Error("Settle with a canceled context succeeded, want an error")
	}
	if err := st.Refund(ctx, good); err == nil {
		t.Error("Refund with a canceled context succeeded, want an error")
	}
	s.wantUsage(t, st, sub, "requests", quota.Usage{Used: 1})
	s.wantUsage(t, st, sub, "tokens", quota.Usage{Reserved: 5})
}

// holdExpires: a hold that is not settled within its TTL is released (a
// later take fits in its place) and never billed; a settle that comes
// after it still counts what was used, without releasing twice.
func (s suite) holdExpires(t *testing.T) {
	st, sub := s.o.New(t), Subject(t)
	const ttl = time.Minute
	first := s.reserve(sub, ID(t), 1, -1, 100, 100)
	first.Reserve[0].TTL = ttl
	take(t, st, first)
	if res := take(t, st, s.reserve(sub, ID(t), 1, -1, 1, 100)); res.Allowed {
		t.Fatalf("Take beside a live hold of the whole limit = %+v, want denied", res)
	}
	s.o.Advance(ttl)
	s.wantUsage(t, st, sub, "tokens", quota.Usage{Denied: 1})
	second := s.reserve(sub, ID(t), 1, -1, 100, 100)
	if res := take(t, st, second); !res.Allowed || res.Holds[0] != (quota.HoldResult{Reserved: 100}) {
		t.Fatalf("Take of the whole limit after the hold expired = %+v, want allowed, Reserved 100", res)
	}
	settle(t, st, first, 70) // late: counted, not released again
	s.wantUsage(t, st, sub, "tokens", quota.Usage{Used: 70, Reserved: 100, Denied: 1})
	settle(t, st, second, 30)
	s.wantUsage(t, st, sub, "tokens", quota.Usage{Used: 100, Denied: 1})
}

// expiredHoldNeverBilled: the holds of a process that died before
// settling are released after their TTL, by whatever call comes next, and
// nothing of them becomes billable.
func (s suite) expiredHoldNeverBilled(t *testing.T) {
	st, sub := s.o.New(t), Subject(t)
	const ttl = 5 * time.Minute
	for i := 0; i < 10; i++ {
		r := s.reserve(sub, ID(t), 1, -1, 100, 10_000)
		r.Reserve[0].TTL = ttl
		take(t, st, r) // and the process dies: never settled
	}
	s.wantUsage(t, st, sub, "tokens", quota.Usage{Reserved: 1000})
	s.o.Advance(ttl + time.Second)
	s.wantUsage(t, st, sub, "tokens", quota.Usage{})
	r := s.reserve(sub, ID(t), 1, -1, 10_000, 10_000) // fits only if every dead hold was released
	if res := take(t, st, r); !res.Allowed || res.Holds[0] != (quota.HoldResult{Reserved: 10_000}) {
		t.Fatalf("Take after the dead holds expired = %+v, want allowed with only its own hold", res)
	}
	settle(t, st, r, 0)
	s.wantUsage(t, st, sub, "tokens", quota.Usage{})
	s.wantUsage(t, st, sub, "requests", quota.Usage{Used: 11})
}
