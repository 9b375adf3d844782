package quota_test

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/billkit/billkit/internal/testserver"
	"github.com/billkit/billkit/quota"
	"github.com/billkit/billkit/quota/quotatest"
)

func TestStoreConformance(t *testing.T) {
	t.Parallel()
	t.Run("Memory", func(t *testing.T) {
		clk := newClock(time.Now())
		st := quota.NewMemoryStore(quota.MemoryOptions{Now: clk.Now})
		quotatest.TestStore(t, quotatest.Options{New: func(*testing.T) quota.Store { return st }, Now: clk.Now, Advance: clk.Add})
	})
	t.Run("MemoryZeroValue", func(t *testing.T) {
		quotatest.TestStore(t, quotatest.Options{New: func(*testing.T) quota.Store { return new(quota.MemoryStore) }})
	})
	t.Run("Miniredis", func(t *testing.T) {
		_, c := miniredisClient(t)
		conformance(t, c)
	})
}

// conformance runs quotatest on a RedisStore of c whose clock is fake, so
// that holds can expire without waiting.
func conformance(t *testing.T, c redis.UniversalClient) {
	clk := newClock(time.Now())
	st, err := quota.NewRedisStore(c, quota.RedisOptions{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	quotatest.TestStore(t, quotatest.Options{New: func(*testing.T) quota.Store { return st }, Now: clk.Now, Advance: clk.Add})
}

// TestRedisStore runs the store and the middleware against a real
// redis-server.
func TestRedisStore(t *testing.T) {
	t.Parallel()
	srv := testserver.StartRedis(t)
	c := redisClient(t, srv.Addr)
	st := newRedisStore(t, c)

	t.Run("Conformance", func(t *testing.T) { conformance(t, c) })
	t.Run("ExactCounting", func(t *testing.T) { testExactCounting(t, st) })
	t.Run("ExpiryNeverShortened", func(t *testing.T) { testExpiryNeverShortened(t, c, st) })
	t.Run("OneRoundTrip", func(t *testing.T) { testOneRoundTrip(t, srv.Addr) })
	t.Run("ScriptFlushed", func(t *testing.T) { testScriptFlushed(t, srv.Addr) })
	t.Run("NearInt64Range", func(t *testing.T) { testNearInt64Range(t, c, st) })
	t.Run("Reserve", func(t *testing.T) {
		testReserve(t, func(t *testing.T) redis.UniversalClient { return redisClient(t, srv.Addr) })
	})
	t.Run("KeyFormat", func(t *testing.T) {
		st, err := quota.NewRedisStore(c, quota.RedisOptions{Prefix: "acme"})
		if err != nil {
			t.Fatal(err)
		}
		p := quota.CalendarPeriod(quota.Month, time.Date(2026, 11, 5, 0, 0, 0, 0, time.UTC))
		if got, want := quota.RedisKey(st, "alice", "requests", p), "acme:{alice}:usage:requests:20261101"; got != want {
			t.Fatalf("Key = %q, want %q", got, want)
		}
		p.Start = p.Start.Add(90*time.Minute + 5*time.Second)
		if got, want := quota.RedisKey(st, "alice", "requests", p), "acme:{alice}:usage:requests:20261101T013005Z"; got != want {
			t.Fatalf("Key = %q, want %q", got, want)
		}
	})
	// Q2, after everything above has written its keys.
	t.Run("EveryKeyExpires", func(t *testing.T) { assertAllKeysExpire(t, c) })
}

// TestRedisCluster runs the same code on a three-master Redis Cluster.
func TestRedisCluster(t *testing.T) {
	t.Parallel()
	cl := testserver.StartCluster(t)
	c := cl.Client(t)
	st := newRedisStore(t, c)
	t.Run("Conformance", func(t *testing.T) { conformance(t, c) })
	t.Run("ExactCounting", func(t *testing.T) { testExactCounting(t, st) })
	t.Run("ExpiryNeverShortened", func(t *testing.T) { testExpiryNeverShortened(t, c, st) })
	t.Run("Reserve", func(t *testing.T) {
		testReserve(t, func(t *testing.T) redis.UniversalClient { return cl.Client(t) })
	})
	t.Run("EveryKeyExpires", func(t *testing.T) {
		err := c.ForEachMaster(context.Background(), func(ctx context.Context, m *redis.Client) error {
			assertAllKeysExpire(t, m)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// testExactCounting is Q1: 32 goroutines × 500 requests through the
// middleware count exactly 16,000, and a strict limit of 1,000 admits
// exactly 1,000.
func testExactCounting(t *testing.T, st quota.Store) {
	const goroutines, perG = 32, 500
	run := func(t *testing.T, lim quota.Limits) (ok, denied int, subject string) {
		subject = quotatest.Subject(t)
		h := newMiddleware(t, quota.Config{Store: st, Limits: quota.StaticLimits(lim), Deadline: 5 * time.Second}).Handle(okHandler())
		var mu sync.Mutex
		codes := map[int]int{}
		var wg sync.WaitGroup
		for g := 0; g < goroutines; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				local := map[int]int{}
				// One request per goroutine: the middleware must not
				// mutate it (it copies it with WithContext).
				r := httptest.NewRequest(http.MethodGet, "/v1/thing", nil)
				r.Header.Set("X-Subject", subject)
				w := &codeWriter{}
				for i := 0; i < perG; i++ {
					w.reset()
					h.ServeHTTP(w, r)
					local[w.code]++
				}
				mu.Lock()
				for k, v := range local {
					codes[k] += v
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
		if len(codes) > 2 || codes[http.StatusOK]+codes[http.StatusPaymentRequired] != goroutines*perG {
			t.Fatalf("status codes %v, want only 200 and 402", codes)
		}
		return codes[http.StatusOK], codes[http.StatusPaymentRequired], subject
	}
	period := quota.CalendarPeriod(quota.Month, time.Now())
	t.Run("NoCap", func(t *testing.T) {
		ok, _, sub := run(t, quota.Limits{Plan: "payg", Overage: true})
		if ok != goroutines*perG {
			t.Fatalf("allowed %d, want %d", ok, goroutines*perG)
		}
		u, err := st.Usage(context.Background(), sub, "requests", period)
		if err != nil || u != (quota.Usage{Used: goroutines * perG}) {
			t.Fatalf("Usage = %+v, %v; want Used %d", u, err, goroutines*perG)
		}
	})
	t.Run("StrictLimit", func(t *testing.T) {
		ok, denied, sub := run(t, quota.Limits{Plan: "strict", Included: 1000})
		if ok != 1000 || denied != goroutines*perG-1000 {
			t.Fatalf("allowed %d, denied %d; want 1000 and %d", ok, denied, goroutines*perG-1000)
		}
		u, err := st.Usage(context.Background(), sub, "requests", period)
		if err != nil || u != (quota.Usage{Used: 1000, Denied: goroutines*perG - 1000}) {
			t.Fatalf("Usage = %+v, %v; want Used 1000, Denied %d", u, err, goroutines*perG-1000)
		}
	})
}

// testExpiryNeverShortened checks that a Take sets the expiry to ExpireAt,
// moves it later, never earlier, and gives an expiry to a key without one.
func testExpiryNeverShortened(t *testing.T, c redis.UniversalClient, st *quota.RedisStore) {
	ctx := context.Background()
	sub := quotatest.Subject(t)
	p := quota.CalendarPeriod(quota.Month, time.Now())
	key := quota.RedisKey(st, sub, "requests", p)
	req := quota.TakeRequest{Subject: sub, Meter: "requests", Period: p, Cost: 1, Unlimited: true, ExpireAt: p.End.Add(10 * 24 * time.Hour)}
	expireTime := func() int64 {
		t.Helper()
		v, err := c.ExpireTime(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return int64(v / time.Second)
	}
	steps := []struct {
		name     string
		expireAt time.Time
		want     time.Time
	}{
		{"set", p.End.Add(10 * 24 * time.Hour), p.End.Add(10 * 24 * time.Hour)},
		{"extended", p.End.Add(40 * 24 * time.Hour), p.End.Add(40 * 24 * time.Hour)},
		{"not shortened", p.End.Add(24 * time.Hour), p.End.Add(40 * 24 * time.Hour)},
	}
	for _, s := range steps {
		req.ExpireAt = s.expireAt
		if _, err := st.Take(ctx, req); err != nil {
			t.Fatal(err)
		}
		if got := expireTime(); got != s.want.Unix() {
			t.Fatalf("%s: EXPIRETIME = %d, want %d", s.name, got, s.want.Unix())
		}
	}
	// A key that lost its expiry (written by hand, say) gets one back.
	if err := c.Persist(ctx, key).Err(); err != nil {
		t.Fatal(err)
	}
	req.ExpireAt = p.End.Add(time.Hour)
	if _, err := st.Take(ctx, req); err != nil {
		t.Fatal(err)
	}
	if got := expireTime(); got != req.ExpireAt.Unix() {
		t.Fatalf("after PERSIST: EXPIRETIME = %d, want %d", got, req.ExpireAt.Unix())
	}
}

// assertAllKeysExpire is Q2: every key in the database has an expiry.
func assertAllKeysExpire(t *testing.T, c *redis.Client) {
	t.Helper()
	ctx := context.Background()
	n := 0
	iter := c.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		n++
		ttl, err := c.TTL(ctx, iter.Val()).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl <= 0 {
			t.Errorf("key %s has TTL %v, want an expiry", iter.Val(), ttl)
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d keys on %s, all with an expiry", n, c.Options().Addr)
}

// testOneRoundTrip is Q4: in the steady state a decision through the
// middleware costs exactly one command on the wire (EVALSHA), seen both by
// a client hook and by the server's INFO commandstats, and the script runs
// four commands.
func testOneRoundTrip(t *testing.T, addr string) {
	c := redisClient(t, addr)
	hook := &testserver.CommandHook{}
	c.AddHook(hook)
	st := newRedisStore(t, c)
	h := newMiddleware(t, quota.Config{Store: st, Limits: quota.StaticLimits{Plan: "pro", Included: 1000}}).Handle(okHandler())
	sub := quotatest.Subject(t)
	if w := do(h, sub); w.Code != http.StatusOK { // warm-up: may load the script
		t.Fatalf("warm-up status %d", w.Code)
	}
	hook.Reset()
	admin := redisClient(t, addr)
	before := commandCalls(t, admin)
	const n = 25
	for i := 0; i < n; i++ {
		if w := do(h, sub); w.Code != http.StatusOK {
			t.Fatalf("status %d", w.Code)
		}
	}
	after := commandCalls(t, admin)
	cmds := hook.Reset()
	if len(cmds) != n {
		t.Fatalf("%d requests sent %d commands %v, want %d", n, len(cmds), cmds, n)
	}
	for _, name := range cmds {
		if name != "evalsha" {
			t.Fatalf("command %q sent, want only evalsha", name)
		}
	}
	if d := after["evalsha"] - before["evalsha"]; d != n {
		t.Errorf("server counted %d EVALSHA, want %d", d, n)
	}
	// Commands run inside the script count too: an allowed request in
	// the steady state runs SET (its take record, for refunds), HMGET,
	// HINCRBY and EXPIRETIME only; it touches no sorted set, since the
	// meter holds no reservation.
	for name, want := range map[string]int64{"set": n, "hmget": n, "hincrby": n, "expiretime": n,
		"eval": 0, "hget": 0, "get": 0, "ttl": 0, "pttl": 0, "expire": 0, "expireat": 0,
		"zadd": 0, "zrangebyscore": 0, "zremrangebyscore": 0, "zrem": 0} {
		if d := after[name] - before[name]; d != want {
			t.Errorf("server counted %d %s, want %d", d, strings.ToUpper(name), want)
		}
	}
}

// testScriptFlushed checks the fallback of a server that lost its scripts
// (restart, SCRIPT FLUSH): the NOSCRIPT reply to EVALSHA is followed by one
// EVAL that counts, and the next call is an EVALSHA again.
func testScriptFlushed(t *testing.T, addr string) {
	ctx := context.Background()
	c := redisClient(t, addr)
	hook := &testserver.CommandHook{}
	c.AddHook(hook)
	st := newRedisStore(t, c)
	sub := quotatest.Subject(t)
	p := quota.CalendarPeriod(quota.Month, time.Now())
	req := quota.TakeRequest{Subject: sub, Meter: "requests", Period: p, Cost: 2, Limit: 3, ExpireAt: p.End.Add(time.Hour)}
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	hook.Reset()
	for i, want := range []quota.TakeResult{{Allowed: true, Used: 2}, {Used: 2, Exhausted: "requests"}} {
		res, err := st.Take(ctx, req)
		if err != nil || !reflect.DeepEqual(res, want) {
			t.Fatalf("Take %d = %+v, %v; want %+v", i, res, err, want)
		}
	}
	if got, want := strings.Join(hook.Reset(), " "), "evalsha eval evalsha"; got != want {
		t.Fatalf("commands %q, want %q", got, want)
	}
	if u, err := st.Usage(ctx, sub, "requests", p); err != nil || u != (quota.Usage{Used: 2, Denied: 2}) {
		t.Fatalf("Usage = %+v, %v; want Used 2, Denied 2", u, err)
	}
}

// testNearInt64Range: with a limit, a cost that would take the count out of
// the int64 range is denied and leaves "used" as it was; without a limit it
// is Redis's overflow error, and nothing is counted.
func testNearInt64Range(t *testing.T, c redis.UniversalClient, st *quota.RedisStore) {
	ctx := context.Background()
	sub := quotatest.Subject(t)
	p := quota.CalendarPeriod(quota.Month, time.Now())
	key := quota.RedisKey(st, sub, "requests", p)
	if err := c.HSet(ctx, key, "used", math.MaxInt64-1).Err(); err != nil {
		t.Fatal(err)
	}
	req := quota.TakeRequest{Subject: sub, Meter: "requests", Period: p, Cost: 5, Limit: math.MaxInt64, ExpireAt: p.End.Add(time.Hour)}
	// The script's arithmetic is Lua's (doubles), so the Used it reports
	// this far above 2^53 is approximate; the stored counts below are exact.
	if res, err := st.Take(ctx, req); err != nil || res.Allowed {
		t.Fatalf("Take near the limit = %+v, %v; want denied", res, err)
	}
	req.Limit, req.Unlimited = 0, true
	if _, err := st.Take(ctx, req); err == nil {
		t.Fatal("Take without a limit past the int64 range: no error")
	}
	if u, err := st.Usage(ctx, sub, "requests", p); err != nil || u != (quota.Usage{Used: math.MaxInt64 - 1, Denied: 5}) {
		t.Fatalf("Usage = %+v, %v; want Used %d, Denied 5", u, err, int64(math.MaxInt64-1))
	}
	if ttl, err := c.TTL(ctx, key).Result(); err != nil || ttl <= 0 {
		t.Fatalf("TTL = %v, %v; want an expiry", ttl, err)
	}
}

// commandCalls parses INFO commandstats into command → calls.
func commandCalls(t *testing.T, c *redis.Client) map[string]int64 {
	t.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, line := range strings.Split(info, "\r\n") {
		name, rest, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":calls=")
		if !ok {
			continue
		}
		calls, _, _ := strings.Cut(rest, ",")
		n, err := strconv.ParseInt(calls, 10, 64)
		if err == nil {
			out[name] = n
		}
	}
	return out
}

func TestNewRedisStoreValidates(t *testing.T) {
	t.Parallel()
	_, good := miniredisClient(t)
	noCtx := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { noCtx.Close() })
	noCtxCluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	t.Cleanup(func() { noCtxCluster.Close() })
	noCtxRing := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}})
	t.Cleanup(func() { noCtxRing.Close() })
	for _, c := range []struct {
		name    string
		client  redis.UniversalClient
		opts    quota.RedisOptions
		want    error
		mention string // the field the error names
	}{
		{"nil client", nil, quota.RedisOptions{}, quota.ErrInvalidConfig, "client"},
		{"no context timeout", noCtx, quota.RedisOptions{}, quota.ErrInvalidConfig, "ContextTimeoutEnabled"},
		{"cluster without context timeout", noCtxCluster, quota.RedisOptions{}, quota.ErrInvalidConfig, "ContextTimeoutEnabled"},
		{"ring without context timeout", noCtxRing, quota.RedisOptions{}, quota.ErrInvalidConfig, "ContextTimeoutEnabled"},
		{"brace in prefix", good, quota.RedisOptions{Prefix: "a{b"}, quota.ErrInvalidConfig, "Prefix"},
		{"ok", good, quota.RedisOptions{}, nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := quota.NewRedisStore(c.client, c.opts)
			if !errors.Is(err, c.want) {
				t.Fatalf("NewRedisStore error = %v, want %v", err, c.want)
			}
			if err != nil && !strings.Contains(err.Error(), c.mention) {
				t.Errorf("NewRedisStore error %q does not name %s", err, c.mention)
			}
		})
	}
}
