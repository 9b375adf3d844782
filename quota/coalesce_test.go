package quota_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/billkit/billkit/internal/testserver"
	"github.com/billkit/billkit/quota"
	"github.com/billkit/billkit/quota/quotatest"
)

// gateHook records the take scripts a client sends, one entry per round
// trip (the number of takes in it, and whether it was a pipeline). The
// first take sent alone can be held back (hold) until release is closed,
// and every pipeline can be held back after the server has answered it
// (pipeHold, until pipeRelease is closed).
type gateHook struct {
	hold        bool
	held        chan struct{} // closed when the first take is held
	release     chan struct{}
	pipeHold    bool
	pipeSent    chan struct{} // closed when the first pipeline has its answers
	pipeRelease chan struct{}
	beforePipe  func() // run once, before the first pipeline is sent
	evals       atomic.Int64

	once, pipeOnce, beforeOnce sync.Once
	mu                         sync.Mutex
	trips                      []trip
}

type trip struct {
	takes    int
	pipeline bool
	ctx      context.Context
}

func newGateHook() *gateHook {
	return &gateHook{held: make(chan struct{}), release: make(chan struct{}), pipeSent: make(chan struct{}), pipeRelease: make(chan struct{})}
}

func isTake(c redis.Cmder) bool { return takesIn(c) > 0 }

// takesIn returns the number of decisions a command carries: one for a
// take script, one per decision for the script of several decisions on
// one counter, none for any other command.
func takesIn(c redis.Cmder) int {
	a := c.Args()
	if len(a) < 2 || a[0] != "evalsha" {
		return 0
	}
	switch a[1] {
	case quota.TakeScriptSHA, quota.LeanTakeScriptSHA:
		return 1
	case quota.ComboTakeScriptSHA:
		return (len(a) - 8) / 4
	}
	return 0
}

// evalTakesIn is takesIn for an EVAL (a take sent again after NOSCRIPT).
func evalTakesIn(c redis.Cmder) int {
	a := c.Args()
	if len(a) < 2 || a[0] != "eval" {
		return 0
	}
	switch a[1] {
	case quota.TakeSource, quota.LeanTakeSource:
		return 1
	case quota.ComboTakeSource:
		return (len(a) - 8) / 4
	}
	return 0
}

func (h *gateHook) record(t trip) {
	h.mu.Lock()
	h.trips = append(h.trips, t)
	h.mu.Unlock()
}

func (h *gateHook) Trips() []trip {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]trip(nil), h.trips...)
}

func (h *gateHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *gateHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isTake(cmd) {
			h.record(trip{takes: 1, ctx: ctx})
			if h.hold {
				first := false
				h.once.Do(func() { first = true })
				if first {
					close(h.held)
					<-h.release
				}
			}
		}
		return next(ctx, cmd)
	}
}

func (h *gateHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		n := 0
		for _, c := range cmds {
			n += takesIn(c)
		}
		for _, c := range cmds {
			if c.Name() == "eval" {
				h.evals.Add(int64(evalTakesIn(c)))
			}
		}
		if n > 0 {
			h.record(trip{takes: n, pipeline: true, ctx: ctx})
			if h.beforePipe != nil {
				h.beforeOnce.Do(h.beforePipe)
			}
		}
		err := next(ctx, cmds)
		if n > 0 && h.pipeHold {
			h.pipeOnce.Do(func() {
				close(h.pipeSent)
				<-h.pipeRelease
			})
		}
		return err
	}
}

// waitFor polls cond until it holds or the test has waited too long.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestCoalesce is Q11 on miniredis, redis-server and a Cluster.
func TestCoalesce(t *testing.T) {
	t.Parallel()
	t.Run("Miniredis", func(t *testing.T) {
		t.Parallel()
		testCoalesce(t, func(t *testing.T) redis.UniversalClient { _, c := miniredisClient(t); return c })
	})
	t.Run("RedisServer", func(t *testing.T) {
		t.Parallel()
		srv := testserver.StartRedis(t)
		testCoalesce(t, func(t *testing.T) redis.UniversalClient { return redisClient(t, srv.Addr) })
	})
	t.Run("Cluster", func(t *testing.T) {
		t.Parallel()
		cl := testserver.StartCluster(t)
		testCoalesce(t, func(t *testing.T) redis.UniversalClient { return cl.Client(t) })
	})
}

func testCoalesce(t *testing.T, client func(t *testing.T) redis.UniversalClient) {
	t.Run("Batches", func(t *testing.T) { testBatches(t, client(t)) })
	t.Run("Deadlines", func(t *testing.T) { testBatchDeadlines(t, client(t)) })
	t.Run("LoneRequest", func(t *testing.T) { testLoneRequest(t, client(t)) })
	t.Run("NoCoalesce", func(t *testing.T) { testNoCoalesce(t, client(t)) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrentBatches(t, client(t)) })
	t.Run("ScriptFlushed", func(t *testing.T) { testBatchScriptFlushed(t, client(t)) })
}

// testBatches checks that decisions arriving while one is on the wire go
// together as pipelines of at most MaxBatch, and that every one of them
// is counted exactly once.
func testBatches(t *testing.T, c redis.UniversalClient) {
	hook := newGateHook()
	hook.hold = true
	c.AddHook(hook)
	st, err := quota.NewRedisStore(c, quota.RedisOptions{MaxBatch: 4})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p := quota.CalendarPeriod(quota.Month, time.Now())
	// Several subjects, so that on a Cluster the batch spans nodes.
	subs := []string{quotatest.Subject(t) + "a", quotatest.Subject(t) + "b", quotatest.Subject(t) + "c"}
	take := func(sub string) error {
		res, err := st.Take(ctx, quota.TakeRequest{Subject: sub, Meter: "requests", Period: p, Cost: 1, Limit: 100, ExpireAt: p.End.Add(time.Hour)})
		if err == nil && !res.Allowed {
			err = errors.New("denied")
		}
		return err
	}
	const queued = 10
	var wg sync.WaitGroup
	errs := make(chan error, queued+1)
	wg.Add(1)
	go func() { defer wg.Done(); errs <- take(subs[0]) }()
	<-hook.held
	for i := 0; i < queued; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- take(subs[i%len(subs)]) }()
	}
	waitFor(t, "the queue", func() bool { return quota.QueueLen(st) == queued })
	close(hook.release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var sizes []int
	for _, tr := range hook.Trips() {
		if tr.pipeline {
			sizes = append(sizes, tr.takes)
		} else if tr.takes != 1 {
			t.Errorf("a command of %d takes", tr.takes)
		}
	}
	if len(sizes) != 3 || sizes[0] != 4 || sizes[1] != 4 || sizes[2] != 2 {
		t.Errorf("pipelines of %v takes, want [4 4 2] (MaxBatch 4)", sizes)
	}
	var total int64
	for _, sub := range subs {
		u, err := st.Usage(ctx, sub, "requests", p)
		if err != nil {
			t.Fatal(err)
		}
		total += u.Used
	}
	if total != queued+1 {
		t.Errorf("used %d, want %d", total, queued+1)
	}
}

// testBatchDeadlines runs, through the middleware, a batch in which one
// decision's deadline passes while it waits (never sent, nothing
// counted) and another's passes after its batch was sent (an ambiguous
// outcome: the server counted it, the middleware answers 503 and refunds
// it by take ID), while the others are counted.
func testBatchDeadlines(t *testing.T, c redis.UniversalClient) {
	hook := newGateHook()
	hook.hold, hook.pipeHold = true, true
	c.AddHook(hook)
	st := newRedisStore(t, c)
	m := newMiddleware(t, quota.Config{Store: st, Limits: quota.StaticLimits{Plan: "pro", Included: 100}, Deadline: time.Minute})
	h := m.Handle(okHandler())
	sub := quotatest.Subject(t)
	serve := func(ctx context.Context, code *atomic.Int64, wg *sync.WaitGroup) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := httptest.NewRequestWithContext(ctx, http.MethodGet, "/v1/thing", nil)
			r.Header.Set("X-Subject", sub)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			code.Store(int64(w.Code))
		}()
	}
	var lead, early, late, ok atomic.Int64
	var wgLead, wgEarly, wgLate, wgOK sync.WaitGroup
	serve(context.Background(), &lead, &wgLead)
	<-hook.held
	earlyCtx, cancelEarly := context.WithCancel(context.Background())
	lateCtx, cancelLate := context.WithTimeout(context.Background(), time.Minute)
	defer cancelLate()
	serve(earlyCtx, &early, &wgEarly)
	serve(lateCtx, &late, &wgLate)
	serve(context.Background(), &ok, &wgOK)
	waitFor(t, "the queue", func() bool { return quota.QueueLen(st) == 3 })
	cancelEarly() // ends while queued: never sent
	wgEarly.Wait()
	if got := quota.QueueLen(st); got != 2 {
		t.Fatalf("queue of %d after a queued decision's context ended, want 2", got)
	}
	close(hook.release)
	<-hook.pipeSent // the server has run the batch; its replies are held
	cancelLate()    // ends after its batch was sent
	wgLate.Wait()
	close(hook.pipeRelease)
	wgLead.Wait()
	wgOK.Wait()
	for name, code := range map[string]int64{"lead": lead.Load(), "ok": ok.Load()} {
		if code != http.StatusOK {
			t.Errorf("%s: status %d, want 200", name, code)
		}
	}
	for name, code := range map[string]int64{"early": early.Load(), "late": late.Load()} {
		if code != http.StatusServiceUnavailable {
			t.Errorf("%s: status %d, want 503", name, code)
		}
	}
	m.Close() // the refund of the late decision has run
	// (or, on a store that resolves lost takes, its resolution)
	waitFor(t, "the store's resolutions", func() bool { return quota.Resolving(st) == 0 })
	var sizes []int
	for _, tr := range hook.Trips() {
		if tr.pipeline {
			sizes = append(sizes, tr.takes)
		}
	}
	if len(sizes) != 1 || sizes[0] != 2 {
		t.Errorf("pipelines of %v takes, want one of 2 (the early decision never sent)", sizes)
	}
	p := quota.CalendarPeriod(quota.Month, time.Now())
	u, err := st.Usage(context.Background(), sub, "requests", p)
	if err != nil {
		t.Fatal(err)
	}
	if u.Used != 2 || u.Denied != 0 {
		t.Errorf("usage %+v, want used 2 (lead and ok; late refunded, early never sent), denied 0", u)
	}
}

// testLoneRequest checks that a decision made while no other is in flight
// is sent at once, alone (no pipeline), with the caller's own context:
// nothing waits for a batch to fill.
func testLoneRequest(t *testing.T, c redis.UniversalClient) {
	hook := newGateHook()
	c.AddHook(hook)
	st := newRedisStore(t, c)
	p := quota.CalendarPeriod(quota.Month, time.Now())
	sub := quotatest.Subject(t)
	type key struct{}
	for i := 0; i < 5; i++ {
		ctx := context.WithValue(context.Background(), key{}, i)
		if _, err := st.Take(ctx, quota.TakeRequest{Subject: sub, Meter: "requests", Period: p, Cost: 1, Limit: 100, ExpireAt: p.End.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if n := quota.QueueLen(st); n != 0 {
			t.Fatalf("queue of %d after a lone take", n)
		}
	}
	trips := hook.Trips()
	if len(trips) != 5 {
		t.Fatalf("%d round trips for 5 lone takes, want 5", len(trips))
	}
	for i, tr := range trips {
		if tr.pipeline || tr.takes != 1 {
			t.Errorf("take %d: sent as a pipeline of %d", i, tr.takes)
		}
		if v, _ := tr.ctx.Value(key{}).(int); v != i {
			t.Errorf("take %d: sent with another context (value %v)", i, tr.ctx.Value(key{}))
		}
	}
}

// testNoCoalesce checks that RedisOptions.NoCoalesce sends every decision
// alone, even under concurrency.
func testNoCoalesce(t *testing.T, c redis.UniversalClient) {
	hook := newGateHook()
	c.AddHook(hook)
	st, err := quota.NewRedisStore(c, quota.RedisOptions{NoCoalesce: true})
	if err != nil {
		t.Fatal(err)
	}
	p := quota.CalendarPeriod(quota.Month, time.Now())
	sub := quotatest.Subject(t)
	var wg sync.WaitGroup
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := st.Take(context.Background(), quota.TakeRequest{Subject: sub, Meter: "requests", Period: p, Cost: 1, Limit: 100, ExpireAt: p.End.Add(time.Hour)}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for _, tr := range hook.Trips() {
		if tr.pipeline {
			t.Fatalf("a pipeline of %d takes with NoCoalesce", tr.takes)
		}
	}
	if u, err := st.Usage(context.Background(), sub, "requests", p); err != nil || u.Used != 32 {
		t.Errorf("usage %+v, %v; want used 32", u, err)
	}
}

// testBatchScriptFlushed checks that a batch sent to a server that lost
// the take script (NOSCRIPT) is run again with EVAL, each decision
// counted once.
func testBatchScriptFlushed(t *testing.T, c redis.UniversalClient) {
	// The scripts are flushed after the first take (sent alone) has run
	// and before the batch queued behind it is sent.
	var flush func() error
	switch cc := c.(type) {
	case *redis.ClusterClient:
		flush = func() error {
			return cc.ForEachMaster(context.Background(), func(ctx context.Context, m *redis.Client) error { return m.ScriptFlush(ctx).Err() })
		}
	default:
		flush = func() error { return c.ScriptFlush(context.Background()).Err() }
	}
	hook := newGateHook()
	hook.hold = true
	c.AddHook(hook)
	st := newRedisStore(t, c)
	ctx := context.Background()
	p := quota.CalendarPeriod(quota.Month, time.Now())
	sub := quotatest.Subject(t)
	var flushErr error
	flushed := make(chan struct{})
	hook.beforePipe = func() { flushErr = flush(); close(flushed) }
	take := func() error {
		_, err := st.Take(ctx, quota.TakeRequest{Subject: sub, Meter: "requests", Period: p, Cost: 1, Limit: 100, ExpireAt: p.End.Add(time.Hour)})
		return err
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := take(); err != nil {
			t.Error(err)
		}
	}()
	<-hook.held
	const queued = 5
	for i := 0; i < queued; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := take(); err != nil {
				t.Error(err)
			}
		}()
	}
	waitFor(t, "the queue", func() bool { return quota.QueueLen(st) == queued })
	close(hook.release)
	wg.Wait()
	<-flushed
	if flushErr != nil {
		t.Fatal(flushErr)
	}
	if n := hook.evals.Load(); n != queued {
		t.Errorf("%d decisions sent again by EVAL in pipelines, want %d (the batch run again after NOSCRIPT)", n, queued)
	}
	if u, err := st.Usage(ctx, sub, "requests", p); err != nil || u.Used != queued+1 {
		t.Errorf("usage %+v, %v; want used %d", u, err, queued+1)
	}
}

// testConcurrentBatches runs 64 concurrent clients of the middleware: the
// hook sees pipelines of more than one take, and every request is counted
// exactly once.
func testConcurrentBatches(t *testing.T, c redis.UniversalClient) {
	hook := newGateHook()
	c.AddHook(hook)
	st := newRedisStore(t, c)
	m := newMiddleware(t, quota.Config{Store: st, Limits: quota.StaticLimits{Plan: "pro", Included: 1 << 20}, Deadline: time.Minute})
	h := m.Handle(okHandler())
	sub := quotatest.Subject(t)
	const clients, each = 64, 20
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for j := 0; j < each; j++ {
				if w := do(h, sub); w.Code != http.StatusOK {
					t.Errorf("status %d", w.Code)
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	m.Close()
	most, takes := 0, 0
	for _, tr := range hook.Trips() {
		most = max(most, tr.takes)
		takes += tr.takes
	}
	if most < 2 {
		t.Errorf("no pipeline of more than one take among %d round trips", len(hook.Trips()))
	}
	if takes != clients*each {
		t.Errorf("%d takes sent, want %d", takes, clients*each)
	}
	p := quota.CalendarPeriod(quota.Month, time.Now())
	if u, err := st.Usage(context.Background(), sub, "requests", p); err != nil || u.Used != clients*each {
		t.Errorf("usage %+v, %v; want used %d", u, err, clients*each)
	}
	t.Logf("%d takes in %d round trips, the largest pipeline %d", takes, len(hook.Trips()), most)
}
