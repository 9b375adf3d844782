package quota_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/billkit/billkit/internal/testserver"
	"github.com/billkit/billkit/quota"
	"github.com/billkit/billkit/quota/quotatest"
)

// breakHook breaks the connection under lean takes, as a network does.
// The first lean take sent alone is held until lead is closed, so that
// the takes behind it queue into one pipeline; that pipeline, while armed,
// fails with an unexpected EOF after the server ran it (ran) or before it
// reached the server. Resolutions (EVAL of the resolve script) wait for
// resolve to be closed, and the first failResolve of them fail without
// reaching the server.
type breakHook struct {
	ran         bool
	armed       atomic.Bool
	held        chan struct{}
	lead        chan struct{}
	resolve     chan struct{}
	failResolve atomic.Int32
	resolves    atomic.Int32
	once        sync.Once

	mu     sync.Mutex
	broken [][]any // the args of the broken pipeline's takes
}

func newBreakHook(ran bool) *breakHook {
	return &breakHook{ran: ran, held: make(chan struct{}), lead: make(chan struct{}), resolve: make(chan struct{})}
}

func isLean(c redis.Cmder) bool {
	a := c.Args()
	return len(a) > 1 && a[0] == "evalsha" && (a[1] == quota.LeanTakeScriptSHA || a[1] == quota.ComboTakeScriptSHA)
}

func (h *breakHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *breakHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isLean(cmd) {
			first := false
			h.once.Do(func() { first = true })
			if first {
				close(h.held)
				<-h.lead
			}
		}
		return next(ctx, cmd)
	}
}

func (h *breakHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && cmds[0].Name() == "eval" && cmds[0].Args()[1] == quota.ResolveSource {
			h.resolves.Add(1)
			<-h.resolve
			if h.failResolve.Add(-1) >= 0 {
				for _, c := range cmds {
					c.SetErr(io.ErrUnexpectedEOF)
				}
				return io.ErrUnexpectedEOF
			}
			return next(ctx, cmds)
		}
		if !h.armed.Load() || len(cmds) == 0 || !isLean(cmds[0]) {
			return next(ctx, cmds)
		}
		h.mu.Lock()
		for _, c := range cmds {
			h.broken = append(h.broken, append([]any(nil), c.Args()...))
		}
		h.mu.Unlock()
		if h.ran {
			_ = next(ctx, cmds)
		}
		for _, c := range cmds {
			c.SetErr(io.ErrUnexpectedEOF)
		}
		return io.ErrUnexpectedEOF
	}
}

// leadThenBatch makes n+1 takes of req on st: the first goes alone and is
// held by hook until the n others have queued behind it (arming hook for
// them when arm is set), so that those go as one send. It returns every
// result once all have returned, and fails the test if the first failed.
func leadThenBatch(t *testing.T, st *quota.RedisStore, hook *breakHook, req quota.TakeRequest, n int, arm bool) (quota.TakeResult, []quota.TakeResult, []error) {
	t.Helper()
	ctx := context.Background()
	var lead quota.TakeResult
	var leadErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); lead, leadErr = st.Take(ctx, req) }()
	<-hook.held
	if arm {
		hook.armed.Store(true)
	}
	res, errs := make([]quota.TakeResult, n), make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); res[i], errs[i] = st.Take(ctx, req) }()
	}
	waitFor(t, "the queue", func() bool { return quota.QueueLen(st) == n })
	close(hook.lead)
	wg.Wait()
	if leadErr != nil {
		t.Fatalf("lead take: %v", leadErr)
	}
	return lead, res, errs
}

// TestLostTakes checks how a store that resolves lost takes
// (quota.LostTakeResolver) resolves the takes of a pipeline whose
// connection broke: after the server ran them (the allowed ones are taken
// off "used", the denied ones off "denied") and before it did (each is
// marked, and a take that arrives after its mark counts nothing). The
// resolutions wait until the test has seen what the takes counted; the
// first one fails and is tried again.
func TestLostTakes(t *testing.T) {
	t.Parallel()
	srv := testserver.StartRedis(t)
	for _, ran := range []bool{true, false} {
		name := "BeforeServer"
		if ran {
			name = "AfterServer"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			c := redisClient(t, srv.Addr)
			hook := newBreakHook(ran)
			hook.failResolve.Store(1)
			c.AddHook(hook)
			var observed, observedErrs atomic.Int64
			st, err := quota.NewRedisStore(c, quota.RedisOptions{Background: func(_ context.Context, b quota.BackgroundObservation) {
				if b.Op != "resolve" {
					t.Errorf("observed op %q, want resolve", b.Op)
				}
				observed.Add(1)
				if b.Err != nil {
					observedErrs.Add(1)
				}
			}})
			if err != nil {
				t.Fatal(err)
			}
			// The scripts are loaded, so that the broken pipeline's takes
			// run (AfterServer) and their replay is refused as resolved,
			// not as NOSCRIPT.
			for _, src := range []string{quota.LeanTakeSource, quota.ComboTakeSource} {
				if err := c.ScriptLoad(ctx, src).Err(); err != nil {
					t.Fatal(err)
				}
			}
			if !st.ResolvesLostTakes() {
				t.Fatal("a coalescing store on one server does not resolve lost takes")
			}
			sub := quotatest.Subject(t)
			p := quota.CalendarPeriod(quota.Month, time.Now())
			req := quota.TakeRequest{Subject: sub, Meter: "requests", Period: p, Cost: 1, Limit: 4, ExpireAt: p.End.Add(time.Hour)}

			// The lead take goes alone and is held; 6 more queue behind it
			// and go as one pipeline, which breaks.
			const queued = 6
			_, _, errs := leadThenBatch(t, st, hook, req, queued, true)
			for i, err := range errs {
				if err == nil || errors.Is(err, quota.ErrDuplicateTake) {
					t.Fatalf("take %d of the broken pipeline: error %v, want the connection's", i, err)
				}
			}
			n := 0
			for _, args := range hook.broken {
				n += takesIn(redis.NewCmd(ctx, args...))
			}
			if n != queued {
				t.Fatalf("broken pipeline of %d takes, want %d", n, queued)
			}
			// Before any resolution: what the server ran is counted (3
			// more fit under the limit of 4, 3 are denied).
			if ran {
				wantUsage(t, st, sub, "requests", quota.Usage{Used: 4, Denied: 3})
			} else {
				wantUsage(t, st, sub, "requests", quota.Usage{Used: 1})
			}
			close(hook.resolve)
			waitFor(t, "the resolutions", func() bool { return quota.Resolving(st) == 0 })
			if got := hook.resolves.Load(); got != 2 {
				t.Errorf("%d resolution pipelines, want 2 (the first failed)", got)
			}
			wantUsage(t, st, sub, "requests", quota.Usage{Used: 1})
			// Each decision observed twice: its failed resolution, then the
			// one that succeeded.
			if observed.Load() != 2*queued || observedErrs.Load() != queued {
				t.Errorf("%d resolutions observed (%d failed), want %d (%d failed)", observed.Load(), observedErrs.Load(), 2*queued, queued)
			}

			// A take that reaches the server after its resolution (it was
			// still on its way) counts nothing.
			for _, args := range hook.broken {
				v, err := c.Do(ctx, args...).Result()
				if args[1] == quota.ComboTakeScriptSHA {
					// One reply of three values per decision: 2 = resolved
					// before it ran.
					vals, _ := v.([]any)
					for i := 0; i < len(vals); i += 3 {
						if vals[i] != int64(2) {
							t.Fatalf("takes replayed after their resolution: reply %v, %v; want each resolved before it ran", v, err)
						}
					}
					if err != nil || len(vals) == 0 {
						t.Fatalf("takes replayed after their resolution: reply %v, %v", v, err)
					}
					continue
				}
				if err == nil || !strings.Contains(err.Error(), "BILLKIT_DUPLICATE") {
					t.Fatalf("take replayed after its resolution: error %v, want BILLKIT_DUPLICATE", err)
				}
			}
			wantUsage(t, st, sub, "requests", quota.Usage{Used: 1})
			assertAllKeysExpire(t, c)
		})
	}
}

// TestLostTakeGivesUp checks that a resolution failing for half the
// refund window is given up and logged, and that nothing waits for it
// any more.
func TestLostTakeGivesUp(t *testing.T) {
	t.Parallel()
	srv := testserver.StartRedis(t)
	c := redisClient(t, srv.Addr)
	hook := newBreakHook(true)
	close(hook.resolve)
	hook.failResolve.Store(1 << 30)
	c.AddHook(hook)
	var logs testserver.LockedBuffer
	st, err := quota.NewRedisStore(c, quota.RedisOptions{RefundWindow: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	sub := quotatest.Subject(t)
	p := quota.CalendarPeriod(quota.Month, time.Now())
	req := quota.TakeRequest{Subject: sub, Meter: "requests", Period: p, Cost: 1, Limit: 10, ExpireAt: p.End.Add(time.Hour)}
	leadThenBatch(t, st, hook, req, 2, true)
	waitFor(t, "the resolver to give up", func() bool { return quota.Resolving(st) == 0 })
	if got := logs.String(); !strings.Contains(got, "could not resolve lost decisions") || !strings.Contains(got, "decisions=2") {
		t.Errorf("log %q, want the lost decision given up", got)
	}
	if hook.resolves.Load() < 2 {
		t.Errorf("%d resolution attempts, want it tried again before giving up", hook.resolves.Load())
	}
}

// TestLostTakeAbandoned checks that a lean take whose caller's context
// ends after its pipeline was sent, and whose reply then arrives, is
// undone by the store: nothing is counted for a caller that gave up.
func TestLostTakeAbandoned(t *testing.T) {
	t.Parallel()
	srv := testserver.StartRedis(t)
	c := redisClient(t, srv.Addr)
	hook := newGateHook()
	hook.hold, hook.pipeHold = true, true
	c.AddHook(hook)
	st := newRedisStore(t, c)
	sub := quotatest.Subject(t)
	p := quota.CalendarPeriod(quota.Month, time.Now())
	req := quota.TakeRequest{Subject: sub, Meter: "requests", Period: p, Cost: 5, Limit: 100, ExpireAt: p.End.Add(time.Hour)}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _, _ = st.Take(context.Background(), req) }()
	<-hook.held
	late, cancel := context.WithCancel(context.Background())
	lateDone := make(chan error, 1)
	var okErr error
	go func() { _, err := st.Take(late, req); lateDone <- err }()
	go func() { defer wg.Done(); _, okErr = st.Take(context.Background(), req) }()
	waitFor(t, "the queue", func() bool { return quota.QueueLen(st) == 2 })
	close(hook.release)
	<-hook.pipeSent // the server ran both; their replies are held
	cancel()
	lateErr := <-lateDone
	close(hook.pipeRelease)
	wg.Wait()
	if !errors.Is(lateErr, context.Canceled) || okErr != nil {
		t.Fatalf("late take: %v, want context.Canceled; other take: %v, want nil", lateErr, okErr)
	}
	waitFor(t, "the resolution", func() bool { return quota.Resolving(st) == 0 })
	wantUsage(t, st, sub, "requests", quota.Usage{Used: 10}) // the lead and the other take
}

// TestComboTake checks the decisions of one subject sent together, which
// go as one script call: they are decided one after the other, exactly as
// alone, beside units held by another request's reservation (each reply
// carries them) and at the edge of the int64 range (the increments that
// would leave it fail alone and count nothing).
func TestComboTake(t *testing.T) {
	t.Parallel()
	srv := testserver.StartRedis(t)
	ctx := context.Background()
	p := quota.CalendarPeriod(quota.Month, time.Now())
	t.Run("BesideHolds", func(t *testing.T) {
		c := redisClient(t, srv.Addr)
		hook := newBreakHook(true)
		close(hook.resolve)
		c.AddHook(hook)
		combos := &testserver.CommandHook{}
		c.AddHook(combos)
		st := newRedisStore(t, c)
		sub := quotatest.Subject(t)
		// Another request holds 5 units of "requests".
		hold := quota.TakeRequest{ID: quotatest.ID(t), Subject: sub, Meter: "other", Period: p, Cost: 1, Unlimited: true, ExpireAt: p.End,
			Reserve: []quota.Hold{{Meter: "requests", Period: p, Amount: 5, Limit: 8, ExpireAt: p.End, TTL: time.Hour}}}
		if res, err := st.Take(ctx, hold); err != nil || !res.Allowed {
			t.Fatalf("hold: %+v, %v", res, err)
		}
		req := quota.TakeRequest{Subject: sub, Meter: "requests", Period: p, Cost: 1, Limit: 8, ExpireAt: p.End}
		lead, res, errs := leadThenBatch(t, st, hook, req, 6, false)
		if !lead.Allowed || lead.Used != 1 || lead.Reserved != 5 {
			t.Fatalf("lead: %+v, want allowed, used 1, reserved 5", lead)
		}
		allowed := 0
		for i, r := range res {
			if errs[i] != nil {
				t.Fatalf("take %d: %v", i, errs[i])
			}
			if r.Reserved != 5 {
				t.Errorf("take %d: %+v, want reserved 5 in its reply", i, r)
			}
			if r.Allowed {
				allowed++
				if r.Used < 2 || r.Used > 3 {
					t.Errorf("allowed take %d: used %d, want 2 or 3", i, r.Used)
				}
			} else if r.Used != 3 || r.Exhausted != "requests" {
				t.Errorf("denied take %d: %+v, want used 3, requests exhausted", i, r)
			}
		}
		if allowed != 2 {
			t.Errorf("%d of 6 allowed beside 1 used and 5 held under 8, want 2", allowed)
		}
		wantUsage(t, st, sub, "requests", quota.Usage{Used: 3, Denied: 4, Reserved: 5})
	})
	t.Run("Int64Edge", func(t *testing.T) {
		c := redisClient(t, srv.Addr)
		hook := newBreakHook(true)
		close(hook.resolve)
		c.AddHook(hook)
		st := newRedisStore(t, c)
		sub := quotatest.Subject(t)
		key := quota.RedisKey(st, sub, "requests", p)
		if err := c.HSet(ctx, key, "used", math.MaxInt64-2).Err(); err != nil {
			t.Fatal(err)
		}
		if err := c.ExpireAt(ctx, key, p.End).Err(); err != nil {
			t.Fatal(err)
		}
		req := quota.TakeRequest{Subject: sub, Meter: "requests", Period: p, Cost: 1, Unlimited: true, ExpireAt: p.End}
		// The Used a reply reports this far above 2^53 is approximate (the
		// scripts' arithmetic is Lua's doubles); the stored counts are exact.
		_, _, errs := leadThenBatch(t, st, hook, req, 3, false)
		failed := 0
		for _, err := range errs {
			if err != nil {
				if errors.Is(err, quota.ErrDuplicateTake) {
					t.Errorf("take at the int64 edge: %v, want the overflow", err)
				}
				failed++
			}
		}
		if failed != 2 {
			t.Errorf("%d of 3 takes failed past the int64 range, want 2: %v", failed, errs)
		}
		if n := quota.Resolving(st); n != 0 {
			t.Errorf("%d decisions to resolve, want none (the server said what it did)", n)
		}
		wantUsage(t, st, sub, "requests", quota.Usage{Used: math.MaxInt64})
	})
}

// TestRedisStoreWait checks that Wait returns once the store's
// resolutions are done, and with the context's error while one is held.
func TestRedisStoreWait(t *testing.T) {
	t.Parallel()
	srv := testserver.StartRedis(t)
	ctx := context.Background()
	c := redisClient(t, srv.Addr)
	hook := newBreakHook(true)
	c.AddHook(hook)
	st := newRedisStore(t, c)
	if err := st.Wait(ctx); err != nil {
		t.Fatalf("Wait with nothing to resolve: %v", err)
	}
	sub := quotatest.Subject(t)
	p := quota.CalendarPeriod(quota.Month, time.Now())
	req := quota.TakeRequest{Subject: sub, Meter: "requests", Period: p, Cost: 1, Limit: 10, ExpireAt: p.End.Add(time.Hour)}
	leadThenBatch(t, st, hook, req, 2, true)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := st.Wait(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait while a resolution is held: %v, want the deadline", err)
	}
	close(hook.resolve)
	if err := st.Wait(ctx); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if n := quota.Resolving(st); n != 0 {
		t.Fatalf("%d decisions still to resolve after Wait", n)
	}
	wantUsage(t, st, sub, "requests", quota.Usage{Used: 1})
}

// retryHook runs every take command (or pipeline of them) twice while
// armed and answers with the second run, as go-redis does when it retries
// after a connection broke under a first run that reached the server: the
// second run finds the first's record.
// With replyErr set, it runs them once and answers replyErr instead: the
// reply of a server that a retry reached after the first run (a Sentinel
// failover's READONLY, say).
type retryHook struct {
	armed    atomic.Bool
	replyErr error
}

func (h *retryHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *retryHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.armed.Load() && takesIn(cmd)+evalTakesIn(cmd) > 0 {
			err := next(ctx, cmd)
			if h.replyErr != nil {
				cmd.SetErr(h.replyErr)
				return h.replyErr
			}
			_ = err
		}
		return next(ctx, cmd)
	}
}

func (h *retryHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.armed.Load() && len(cmds) > 0 && takesIn(cmds[0])+evalTakesIn(cmds[0]) > 0 {
			_ = next(ctx, cmds)
			if h.replyErr != nil {
				for _, c := range cmds {
					c.SetErr(h.replyErr)
				}
				return h.replyErr
			}
		}
		return next(ctx, cmds)
	}
}

// serverError is an error reply of Redis, as go-redis gives it.
type serverError string

func (e serverError) Error() string { return string(e) }
func (serverError) RedisError()     {}

// TestRetriedTake checks that a take whose first run reached the server,
// and whose retry (go-redis's, after a broken connection) then found its
// own record or got an error reply that go-redis retries (READONLY), is
// not left counted: the caller gets an error (503 through
// the middleware), and the first run is undone, by the store for takes
// without ID (alone, in a pipeline, and combined on one counter) and by
// the middleware's refund for takes with an ID (RecordPerTake).
func TestRetriedTake(t *testing.T) {
	t.Parallel()
	srv := testserver.StartRedis(t)
	readOnly := serverError("READONLY You can't write against a read only replica.")
	for _, tc := range []struct {
		name     string
		opts     quota.RedisOptions
		subjects int // of the concurrent requests
		replyErr error
	}{
		{"Alone", quota.RedisOptions{}, 0, nil},
		{"Pipeline", quota.RedisOptions{}, 4, nil},
		{"OneCounter", quota.RedisOptions{}, 1, nil},
		{"RecordPerTake", quota.RedisOptions{RecordPerTake: true}, 4, nil},
		{"ReadOnlyAlone", quota.RedisOptions{}, 0, readOnly},
		{"ReadOnlyPipeline", quota.RedisOptions{}, 4, readOnly},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := redisClient(t, srv.Addr)
			hook := &retryHook{replyErr: tc.replyErr}
			c.AddHook(hook)
			st, err := quota.NewRedisStore(c, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := st.ResolvesLostTakes(), !tc.opts.RecordPerTake; got != want {
				t.Fatalf("ResolvesLostTakes = %v, want %v", got, want)
			}
			m := newMiddleware(t, quota.Config{Store: st, Limits: quota.StaticLimits{Plan: "pro", Included: 1000}})
			h := m.Handle(okHandler())
			base := quotatest.Subject(t)
			subs := []string{base}
			for i := 1; i < tc.subjects; i++ {
				subs = append(subs, base+strconv.Itoa(i))
			}
			for _, s := range subs { // warm-up: loads the scripts
				if w := do(h, s); w.Code != http.StatusOK {
					t.Fatalf("warm-up: status %d", w.Code)
				}
			}
			hook.armed.Store(true)
			n := 1
			if tc.subjects > 0 {
				n = 16
			}
			var wg sync.WaitGroup
			codes := make([]int, n)
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					codes[i] = do(h, subs[i%len(subs)]).Code
				}()
			}
			wg.Wait()
			for i, code := range codes {
				if code != http.StatusServiceUnavailable {
					t.Errorf("request %d: status %d, want 503", i, code)
				}
			}
			hook.armed.Store(false)
			m.Close()
			if err := st.Wait(context.Background()); err != nil {
				t.Fatal(err)
			}
			for _, s := range subs {
				wantUsage(t, st, s, "requests", quota.Usage{Used: 1}) // the warm-up only
			}
		})
	}
}

// TestRecordPerTake checks that a store with RecordPerTake keeps a record
// key per take in its subject's slot, and none shared by a send.
func TestRecordPerTake(t *testing.T) {
	t.Parallel()
	srv := testserver.StartRedis(t)
	c := redisClient(t, srv.Addr)
	st, err := quota.NewRedisStore(c, quota.RedisOptions{RecordPerTake: true})
	if err != nil {
		t.Fatal(err)
	}
	h := newMiddleware(t, quota.Config{Store: st, Limits: quota.StaticLimits{Plan: "pro", Included: 1000}}).Handle(okHandler())
	sub := quotatest.Subject(t)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() { defer wg.Done(); do(h, sub) }()
	}
	wg.Wait()
	keys, err := c.Keys(context.Background(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	takes := 0
	for _, k := range keys {
		if strings.Contains(k, ":batch:") {
			t.Errorf("key %s: a record shared by a send, want none", k)
		}
		if strings.HasPrefix(k, "billkit:{"+sub+"}:take:") {
			takes++
		}
	}
	if takes != 32 {
		t.Errorf("%d take records in the subject's slot, want 32", takes)
	}
	wantUsage(t, st, sub, "requests", quota.Usage{Used: 32})
}

// TestComboBounded checks that more decisions of one counter than one
// combined call may carry go as several calls, all decided exactly.
func TestComboBounded(t *testing.T) {
	t.Parallel()
	srv := testserver.StartRedis(t)
	c := redisClient(t, srv.Addr)
	hook := newBreakHook(true)
	close(hook.resolve)
	c.AddHook(hook)
	calls := &testserver.CommandHook{}
	c.AddHook(calls)
	st, err := quota.NewRedisStore(c, quota.RedisOptions{MaxBatch: 400})
	if err != nil {
		t.Fatal(err)
	}
	sub := quotatest.Subject(t)
	p := quota.CalendarPeriod(quota.Month, time.Now())
	req := quota.TakeRequest{Subject: sub, Meter: "requests", Period: p, Cost: 1, Limit: 250, ExpireAt: p.End}
	const n = 300
	_, res, errs := leadThenBatch(t, st, hook, req, n, false)
	allowed := 0
	for i := range res {
		if errs[i] != nil {
			t.Fatalf("take %d: %v", i, errs[i])
		}
		if res[i].Allowed {
			allowed++
		}
	}
	if allowed != 249 {
		t.Errorf("%d of %d allowed beside the lead under 250, want 249", allowed, n)
	}
	wantUsage(t, st, sub, "requests", quota.Usage{Used: 250, Denied: n - 249})
}

// TestSlotShardedServer runs the middleware on a plain client of a server
// that refuses scripts whose keys span hash slots, as a proxy that shards
// by slot does (here a one-node Redis Cluster owning every slot, reached
// without cluster support). The first send whose record is shared across
// subjects is refused with CROSSSLOT before it runs; its decisions go
// again with records of their own subjects, and so does everything after.
// Nothing is refused to the client and every count is exact.
func TestSlotShardedServer(t *testing.T) {
	t.Parallel()
	srv := testserver.StartRedis(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
	ctx := context.Background()
	c := redisClient(t, srv.Addr)
	if err := c.Do(ctx, "cluster", "addslotsrange", 0, 16383).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the cluster", func() bool {
		info, err := c.ClusterInfo(ctx).Result()
		return err == nil && strings.Contains(info, "cluster_state:ok")
	})
	var logs testserver.LockedBuffer
	st, err := quota.NewRedisStore(c, quota.RedisOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	// A generous deadline: 400 requests at once on a loaded machine are
	// not what this test is about.
	h := newMiddleware(t, quota.Config{Store: st, Limits: quota.StaticLimits{Plan: "pro", Included: 1000}, Deadline: 10 * time.Second}).Handle(okHandler())
	base := quotatest.Subject(t)
	subs := []string{base + "a", base + "b", base + "c", base + "d"}
	if w := do(h, subs[0]); w.Code != http.StatusOK { // alone: a record in its slot
		t.Fatalf("lone request: status %d", w.Code)
	}
	const n = 400
	var wg sync.WaitGroup
	var bad atomic.Int64
	var lastBad atomic.Int64
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code := do(h, subs[i%len(subs)]).Code; code != http.StatusOK {
				bad.Add(1)
				lastBad.Store(int64(code))
			}
		}()
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d of %d requests not allowed (the last with status %d), want none", bad.Load(), n, lastBad.Load())
	}
	for i, s := range subs {
		want := int64(n / len(subs))
		if i == 0 {
			want++
		}
		wantUsage(t, st, s, "requests", quota.Usage{Used: want})
	}
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if strings.HasPrefix(k, "billkit:batch:") {
			t.Errorf("key %s: a record shared across slots on a server that refuses them", k)
		}
	}
	if !strings.Contains(logs.String(), "span hash slots") {
		t.Logf("log: %s", logs.String())
		t.Error("the switch to records of one subject was not logged (did any send share a record?)")
	}
	assertAllKeysExpire(t, c)
}
