package billing_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/quota"
)

// countingStore counts Get calls and can block them.
type countingStore struct {
	billing.EntitlementStore
	gets    atomic.Int64
	release chan struct{} // when non-nil, Get waits for it
	fail    error
}

func (s *countingStore) Get(ctx context.Context, subject string) (billing.Entitlement, error) {
	s.gets.Add(1)
	if s.release != nil {
		<-s.release
	}
	if s.fail != nil {
		return billing.Entitlement{}, s.fail
	}
	return s.EntitlementStore.Get(ctx, subject)
}

func setStatus(t testing.TB, s billing.EntitlementStore, subject string, st billing.Status) {
	t.Helper()
	if _, _, err := s.Update(context.Background(), subject, func(e *billing.Entitlement) error {
		e.Status, e.Tier = st, "pro"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func newLimits(t testing.TB, store billing.EntitlementStore, clk *clock, ttl time.Duration) *billing.LimitsCache {
	t.Helper()
	lc, err := billing.NewLifecycle(billing.Config{Store: store, Plans: testPlans(t), Now: clk.Now, LimitsTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return lc.Limits()
}

// TestLimitsTTLBound: a change in the store is enforced exactly when the
// cached read's TTL has passed, not before (one read per TTL) and not later.
func TestLimitsTTLBound(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := &countingStore{EntitlementStore: billing.NewMemoryStore(billing.MemoryOptions{})}
	clk := newClock(t0)
	l := newLimits(t, store, clk, time.Second)
	setStatus(t, store, "alice", billing.StatusActive)
	if got, err := l.Limits(ctx, "alice", quota.DefaultMeter); err != nil || got.Plan != "pro" {
		t.Fatalf("Limits = %+v, %v; want pro", got, err)
	}
	setStatus(t, store, "alice", billing.StatusCanceled)
	clk.Add(time.Second - time.Nanosecond)
	if got, err := l.Limits(ctx, "alice", quota.DefaultMeter); err != nil || got.Plan != "pro" {
		t.Fatalf("within the TTL: Limits = %+v, %v; want the cached pro", got, err)
	}
	if n := store.gets.Load(); n != 1 {
		t.Fatalf("%d store reads within one TTL, want 1", n)
	}
	clk.Add(time.Nanosecond)
	if _, err := l.Limits(ctx, "alice", quota.DefaultMeter); !errors.Is(err, quota.ErrNoPlan) {
		t.Fatalf("at the TTL: err = %v, want ErrNoPlan", err)
	}
	// Invalidate forces a read at once.
	setStatus(t, store, "alice", billing.StatusActive)
	l.Invalidate("alice")
	if got, err := l.Limits(ctx, "alice", quota.DefaultMeter); err != nil || got.Plan != "pro" {
		t.Fatalf("after Invalidate: Limits = %+v, %v; want pro", got, err)
	}
}

func TestLimitsMissesShareOneRead(t *testing.T) {
	t.Parallel()
	store := &countingStore{EntitlementStore: billing.NewMemoryStore(billing.MemoryOptions{}), release: make(chan struct{})}
	setStatus(t, store.EntitlementStore, "alice", billing.StatusActive)
	l := newLimits(t, store, newClock(t0), time.Second)
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := l.Limits(context.Background(), "alice", quota.DefaultMeter)
			errs <- err
		}()
	}
	// Every other miss joins the first one's read, in flight until
	// release.
	for deadline := time.Now().Add(10 * time.Second); l.Waiting("alice") < n-1; runtime.Gosched() {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d misses joined the read in flight", l.Waiting("alice"), n-1)
		}
	}
	close(store.release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := store.gets.Load(); got != 1 {
		t.Fatalf("%d concurrent misses made %d store reads, want 1", n, got)
	}
}

func TestLimitsErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	boom := errors.New("redis down")
	store := &countingStore{EntitlementStore: billing.NewMemoryStore(billing.MemoryOptions{}), fail: boom}
	l := newLimits(t, store, newClock(t0), time.Minute)
	for range 2 {
		if _, err := l.Limits(ctx, "alice", quota.DefaultMeter); !errors.Is(err, boom) || errors.Is(err, quota.ErrNoPlan) {
			t.Fatalf("store failure: err = %v, want the store's error, not ErrNoPlan", err)
		}
	}
	if store.gets.Load() != 2 {
		t.Fatalf("store failures were cached: %d reads, want 2", store.gets.Load())
	}
	store.fail = nil
	if _, err := l.Limits(ctx, "nobody", quota.DefaultMeter); !errors.Is(err, quota.ErrNoPlan) {
		t.Fatalf("unknown subject: err = %v, want ErrNoPlan", err)
	}
	if _, err := billing.NewLifecycle(billing.Config{Store: billing.NewMemoryStore(billing.MemoryOptions{}), Plans: testPlans(t), LimitsTTL: -1}); !errors.Is(err, billing.ErrInvalidConfig) {
		t.Fatalf("no store: err = %v", err)
	}
}

func TestLimitsForStatus(t *testing.T) {
	t.Parallel()
	l := newLimits(t, billing.NewMemoryStore(billing.MemoryOptions{}), newClock(t0), 0)
	period := quota.Period{Start: t0, End: t0.AddDate(0, 1, 0)}
	for _, tc := range []struct {
		e    billing.Entitlement
		plan string
	}{
		{billing.Entitlement{Status: billing.StatusActive, Tier: "pro", Period: period}, "pro"},
		{billing.Entitlement{Status: billing.StatusTrialing, Tier: "starter"}, "starter"},
		{billing.Entitlement{Status: billing.StatusActive, Tier: "gold"}, ""},
		{billing.Entitlement{Status: billing.StatusPending, Tier: "pro"}, "provisional"},
		{billing.Entitlement{Status: billing.StatusPastDue, Tier: "pro", GraceTier: "starter", GraceUntil: t0.Add(time.Second)}, "starter"},
		{billing.Entitlement{Status: billing.StatusPastDue, Tier: "pro", GraceUntil: t0}, ""},
		{billing.Entitlement{Status: billing.StatusCanceled, Tier: "pro"}, ""},
		{billing.Entitlement{Status: billing.StatusUnpaid, Tier: "pro"}, ""},
		{billing.Entitlement{Status: billing.StatusIncomplete, Tier: "pro"}, ""},
		{billing.Entitlement{Status: billing.StatusIncompleteExpired, Tier: "pro"}, ""},
		{billing.Entitlement{Status: billing.StatusPaused, Tier: "pro"}, ""},
		{billing.Entitlement{Status: billing.StatusNone}, ""},
	} {
		got, err := l.For(tc.e, t0)
		switch {
		case tc.plan == "" && !errors.Is(err, quota.ErrNoPlan):
			t.Errorf("%s/%s: %+v, %v; want ErrNoPlan", tc.e.Status, tc.e.Tier, got, err)
		case tc.plan != "" && (err != nil || got.Plan != tc.plan):
			t.Errorf("%s/%s: %+v, %v; want plan %s", tc.e.Status, tc.e.Tier, got, err, tc.plan)
		}
	}
	if got, _ := l.For(billing.Entitlement{Status: billing.StatusPending}, t0); got != (quota.Limits{Plan: "provisional", Included: 100, Hard: 100, Interval: quota.Day}) {
		t.Errorf("provisional = %+v, want DefaultProvisional", got)
	}
	if got, _ := l.For(billing.Entitlement{Status: billing.StatusActive, Tier: "pro", Period: period}, t0); got.Period != period {
		t.Errorf("active limits period = %v, want the subscription period", got.Period)
	}
}

// TestRevocationEnforcedAcrossProcesses: after customer.subscription.deleted,
// two quota middleware instances (two processes' worth: separate limits
// caches) sharing one real Redis deny the subject once the limits TTL has
// passed, and not before it has.
func TestRevocationEnforcedAcrossProcesses(t *testing.T) {
	t.Parallel()
	rdb := realRedis(t)
	store := newRedisStore(t, rdb)
	counters, err := quota.NewRedisStore(rdb, quota.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	clk := newClock(t0.Add(time.Hour))
	h := newHarness(t, store, nil)
	sh := newest(t)
	h.deliver(sh.event("evt_cr", evCreated, sh.sub(sub{Status: "active"}), sec(1)))

	const ttl = time.Second
	var apis []http.Handler
	for range 2 {
		mw, err := quota.New(quota.Config{
			Subject: func(r *http.Request) (string, error) { return r.Header.Get("X-Subject"), nil },
			Limits:  newLimits(t, store, clk, ttl),
			Store:   counters,
			Now:     clk.Now,
			Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		apis = append(apis, mw.Handle(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
	}
	call := func(api http.Handler) int {
		req := httptest.NewRequest(http.MethodGet, "/v1/things", nil)
		req.Header.Set("X-Subject", "alice")
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		return rec.Code
	}
	for i, api := range apis {
		if st := call(api); st != http.StatusOK {
			t.Fatalf("instance %d before revocation: %d, want 200", i, st)
		}
	}
	h.deliver(sh.event("evt_del", evDeleted, sh.sub(sub{Status: "canceled"}), sec(2)))
	clk.Add(ttl - time.Millisecond)
	for i, api := range apis {
		if st := call(api); st != http.StatusOK {
			t.Fatalf("instance %d within the TTL: %d; the cache should still answer (one Redis round trip)", i, st)
		}
	}
	clk.Add(time.Millisecond)
	for i, api := range apis {
		if st := call(api); st != http.StatusPaymentRequired {
			t.Fatalf("instance %d after the TTL: %d, want 402 (no plan)", i, st)
		}
	}
}

// ctxStore blocks Get until release is closed, then honours the context.
type ctxStore struct {
	billing.EntitlementStore
	started chan struct{}
	release chan struct{}
	once    sync.Once
	reads   atomic.Int32
}

func (s *ctxStore) Get(ctx context.Context, subject string) (billing.Entitlement, error) {
	s.reads.Add(1)
	s.once.Do(func() { close(s.started) })
	<-s.release
	if err := ctx.Err(); err != nil {
		return billing.Entitlement{}, err
	}
	return s.EntitlementStore.Get(ctx, subject)
}

// TestLimitsLeaderCanceled: a shared read whose caller's context ends (a
// client hung up) does not fail the other callers waiting on it.
func TestLimitsLeaderCanceled(t *testing.T) {
	t.Parallel()
	mem := billing.NewMemoryStore(billing.MemoryOptions{})
	setStatus(t, mem, "alice", billing.StatusActive)
	store := &ctxStore{EntitlementStore: mem, started: make(chan struct{}), release: make(chan struct{})}
	l := newLimits(t, store, newClock(t0), time.Second)
	leaderCtx, cancel := context.WithCancel(context.Background())
	leaderErr := make(chan error, 1)
	go func() { _, err := l.Limits(leaderCtx, "alice", quota.DefaultMeter); leaderErr <- err }()
	<-store.started
	waiter := make(chan error, 1)
	go func() {
		got, err := l.Limits(context.Background(), "alice", quota.DefaultMeter)
		if err == nil && got.Plan != "pro" {
			err = errors.New("plan " + got.Plan)
		}
		waiter <- err
	}()
	// The waiter must have joined the leader's read, or the test would
	// prove nothing.
	for deadline := time.Now().Add(10 * time.Second); l.Waiting("alice") == 0; runtime.Gosched() {
		if time.Now().After(deadline) {
			t.Fatal("the second caller never joined the read in flight")
		}
	}
	cancel()
	close(store.release)
	if err := <-leaderErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("leader: %v, want context.Canceled", err)
	}
	if err := <-waiter; err != nil {
		t.Fatalf("waiter: %v, want pro", err)
	}
	if n := store.reads.Load(); n != 2 {
		t.Fatalf("%d store reads, want 2: the canceled shared read, then the waiter's own", n)
	}
}
