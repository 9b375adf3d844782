package usage

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/billkit/billkit/internal/testserver"
	"github.com/billkit/billkit/quota"
	"github.com/redis/go-redis/v9"
)

// redisBackends returns the Redis clients the stores are tested on: a
// real redis-server and a real three-master Cluster.
func redisBackends(t *testing.T) map[string]redis.UniversalClient {
	t.Helper()
	return map[string]redis.UniversalClient{
		"redis":   testserver.StartRedis(t).Client(t),
		"cluster": testserver.StartCluster(t).Client(t),
	}
}

// TestUsageStores runs the watermarkStore and leaseStore contracts on the
// memory stores, a real redis-server and a real three-master Cluster, and
// races two reporters over the Redis ones.
func TestUsageStores(t *testing.T) {
	t.Parallel()
	type backend struct {
		wm     func(t *testing.T) (watermarkStore, func(wmKey) time.Duration)
		lease  func(t *testing.T) (leaseStore, func(subject string) time.Duration)
		client redis.UniversalClient
	}
	backends := map[string]backend{
		"memory": {
			wm: func(t *testing.T) (watermarkStore, func(wmKey) time.Duration) {
				return newMemoryWatermarks(nil), nil
			},
			lease: func(t *testing.T) (leaseStore, func(string) time.Duration) {
				return newMemoryLeases(nil), nil
			},
		},
	}
	for name, rdb := range redisBackends(t) {
		backends[name] = backend{
			client: rdb,
			wm: func(t *testing.T) (watermarkStore, func(wmKey) time.Duration) {
				s := newRedisWatermarks(rdb, redisOptions{Prefix: "wm" + t.Name()})
				return s, func(k wmKey) time.Duration {
					return rdb.PTTL(context.Background(), s.key(k)).Val()
				}
			},
			lease: func(t *testing.T) (leaseStore, func(string) time.Duration) {
				s := newRedisLeases(rdb, redisOptions{Prefix: "ls" + t.Name()})
				return s, func(subject string) time.Duration {
					return rdb.PTTL(context.Background(), s.key(subject)).Val()
				}
			},
		}
	}
	for name, b := range backends {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			t.Run("watermark", func(t *testing.T) { testWatermarkContract(t, b.wm) })
			t.Run("lease", func(t *testing.T) { testLeaseContract(t, b.lease) })
			if b.client != nil {
				t.Run("racing reporters", func(t *testing.T) { testRacingRedis(t, b.client) })
			}
		})
	}
}

func testWatermarkContract(t *testing.T, mk func(t *testing.T) (watermarkStore, func(wmKey) time.Duration)) {
	ctx := context.Background()
	start := time.Now().UTC().Truncate(time.Second)
	p1 := quota.Period{Start: start.Add(-time.Hour), End: start.Add(time.Hour)}
	p2 := quota.Period{Start: p1.End, End: p1.End.Add(time.Hour)}
	exp := start.Add(24 * time.Hour)

	t.Run("begin and commit", func(t *testing.T) {
		s, ttl := mk(t)
		k := wmKey{Subject: "alice", Meter: "requests", Period: p1}
		got, err := s.Load(ctx, "alice", "requests", []quota.Period{p1, p2})
		if err != nil || len(got) != 2 || got[0] != (watermark{}) || got[1] != (watermark{}) {
			t.Fatalf("Load of nothing = %+v, %v; want two zero watermarks", got, err)
		}
		f := inFlight{From: 0, To: 7, Identifier: "id-1", Timestamp: start}
		if ok, err := s.Begin(ctx, k, inFlight{From: 3, To: 7, Identifier: "x"}, exp); ok || err != nil {
			t.Fatalf("Begin from 3 on an empty watermark = %v, %v; want false", ok, err)
		}
		if ok, err := s.Begin(ctx, k, f, exp); !ok || err != nil {
			t.Fatalf("Begin = %v, %v; want true", ok, err)
		}
		if ttl != nil {
			if d := ttl(k); d <= 23*time.Hour || d > 24*time.Hour {
				t.Fatalf("watermark TTL after Begin = %v; want about 24h", d)
			}
		}
		if ok, _ := s.Begin(ctx, k, inFlight{From: 0, To: 9, Identifier: "id-2", Timestamp: start}, exp); ok {
			t.Fatal("second Begin while one is in flight succeeded")
		}
		got, _ = s.Load(ctx, "alice", "requests", []quota.Period{p1})
		if got[0].inFlight == nil || *got[0].inFlight != f || got[0].Reported != 0 {
			t.Fatalf("Load after Begin = %+v; want in-flight %+v", got[0], f)
		}
		for _, c := range []wmCommit{{Identifier: "other", To: 7}, {To: 7}} {
			if ok, _ := s.Commit(ctx, k, c, exp); ok {
				t.Fatalf("Commit %+v applied over in-flight %q", c, f.Identifier)
			}
		}
		if ok, err := s.Commit(ctx, k, wmCommit{Identifier: "id-1", To: 7}, exp); !ok || err != nil {
			t.Fatalf("Commit = %v, %v; want true", ok, err)
		}
		if ok, _ := s.Commit(ctx, k, wmCommit{Identifier: "id-1", To: 7}, exp); ok {
			t.Fatal("Commit of an already committed report applied twice")
		}
		got, _ = s.Load(ctx, "alice", "requests", []quota.Period{p1, p2})
		if got[0] != (watermark{Reported: 7}) || got[1] != (watermark{}) {
			t.Fatalf("Load after Commit = %+v; want Reported 7 in p1 only", got)
		}
	})

	t.Run("totals never go down", func(t *testing.T) {
		s, ttl := mk(t)
		k := wmKey{Subject: "bob", Meter: "requests", Period: p1}
		for _, c := range []wmCommit{{To: 5}, {To: 3}, {To: 9, Final: true}, {To: 4}} {
			if ok, err := s.Commit(ctx, k, c, exp); !ok || err != nil {
				t.Fatalf("Commit %+v = %v, %v", c, ok, err)
			}
		}
		got, _ := s.Load(ctx, "bob", "requests", []quota.Period{p1})
		if got[0] != (watermark{Reported: 9, Final: true}) {
			t.Fatalf("watermark = %+v; want Reported 9, Final", got[0])
		}
		if ttl != nil {
			if d := ttl(k); d <= 0 {
				t.Fatalf("watermark TTL = %v; want an expiry", d)
			}
		}
	})

	t.Run("zero final commit creates an expiring key", func(t *testing.T) {
		s, ttl := mk(t)
		k := wmKey{Subject: "carol", Meter: "requests", Period: p1}
		if ok, err := s.Commit(ctx, k, wmCommit{To: 0, Final: true}, exp); !ok || err != nil {
			t.Fatalf("Commit = %v, %v", ok, err)
		}
		got, _ := s.Load(ctx, "carol", "requests", []quota.Period{p1})
		if !got[0].Final {
			t.Fatalf("watermark = %+v; want Final", got[0])
		}
		if ttl != nil && ttl(k) <= 0 {
			t.Fatal("final watermark has no expiry")
		}
	})

	t.Run("concurrent begins: one wins", func(t *testing.T) {
		s, _ := mk(t)
		k := wmKey{Subject: "dave", Meter: "requests", Period: p1}
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i := 0; i < 16; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, err := s.Begin(ctx, k, inFlight{From: 0, To: int64(i + 1), Identifier: "id", Timestamp: start}, exp)
				if err != nil {
					t.Error(err)
				}
				if ok {
					wins.Add(1)
				}
			}()
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("%d concurrent Begins won; want 1", wins.Load())
		}
	})
}

// TestMemoryWatermarkExpiry checks that a memory watermark is gone after
// its expiry (Q2: nothing immortal).
func TestMemoryWatermarkExpiry(t *testing.T) {
	t.Parallel()
	clock := newTestClock(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC))
	s := newMemoryWatermarks(clock.Now)
	p := quota.CalendarPeriod(quota.Month, clock.Now())
	k := wmKey{Subject: "a", Meter: "m", Period: p}
	if ok, _ := s.Commit(context.Background(), k, wmCommit{To: 4}, clock.Now().Add(time.Hour)); !ok {
		t.Fatal("commit failed")
	}
	clock.Add(time.Hour - time.Second)
	if s.Len() != 1 {
		t.Fatal("watermark gone before its expiry")
	}
	clock.Add(time.Second)
	got, _ := s.Load(context.Background(), "a", "m", []quota.Period{p})
	if got[0] != (watermark{}) || s.Len() != 0 {
		t.Fatalf("watermark after expiry = %+v (len %d); want none", got[0], s.Len())
	}
}

// TestRedisWatermarkKey checks the key layout: the subject in a hash tag.
func TestRedisWatermarkKey(t *testing.T) {
	t.Parallel()
	s := newRedisWatermarks(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}), redisOptions{})
	p := quota.CalendarPeriod(quota.Month, time.Date(2026, 11, 5, 0, 0, 0, 0, time.UTC))
	if got, want := s.key(wmKey{Subject: "alice", Meter: "requests", Period: p}), "billkit:{alice}:wm:requests:20261101"; got != want {
		t.Fatalf("Key = %q; want %q", got, want)
	}
}
