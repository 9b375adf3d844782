package billing_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/internal/testserver"
)

// storeFactories are the stores the conformance suite runs against.
func storeFactories() map[string]func(t *testing.T) billing.EntitlementStore {
	return map[string]func(t *testing.T) billing.EntitlementStore{
		"memory":    func(t *testing.T) billing.EntitlementStore { return billing.NewMemoryStore(billing.MemoryOptions{}) },
		"miniredis": func(t *testing.T) billing.EntitlementStore { return newRedisStore(t, miniRedis(t)) },
		"redis":     func(t *testing.T) billing.EntitlementStore { return newRedisStore(t, realRedis(t)) },
		"cluster":   func(t *testing.T) billing.EntitlementStore { return newRedisStore(t, realCluster(t)) },
	}
}

func miniRedis(t testing.TB) *redis.Client {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

func realRedis(t testing.TB) *redis.Client {
	t.Helper()
	return testserver.StartRedis(t).Client(t)
}

func realCluster(t testing.TB) *redis.ClusterClient {
	t.Helper()
	return testserver.StartCluster(t).Client(t)
}

func newRedisStore(t testing.TB, rdb redis.UniversalClient) *billing.RedisStore {
	t.Helper()
	s, err := billing.NewRedisStore(rdb, billing.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStoreConformance(t *testing.T) {
	t.Parallel()
	for name, open := range storeFactories() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testStore(t, open(t))
		})
	}
}

func testStore(t *testing.T, s billing.EntitlementStore) {
	ctx := context.Background()

	t.Run("get missing", func(t *testing.T) {
		if _, err := s.Get(ctx, "nobody"); !errors.Is(err, billing.ErrNotFound) {
			t.Fatalf("Get(nobody) error = %v, want ErrNotFound", err)
		}
		if _, err := s.SubjectByCustomer(ctx, "cus_nobody"); !errors.Is(err, billing.ErrNotFound) {
			t.Fatalf("SubjectByCustomer error = %v, want ErrNotFound", err)
		}
	})

	t.Run("update creates and indexes", func(t *testing.T) {
		got, _, err := s.Update(ctx, "alice", func(e *billing.Entitlement) error {
			if e.Subject != "alice" || e.Status != billing.StatusNone {
				t.Errorf("fn got %+v, want the zero entitlement of alice", e)
			}
			e.Subject = "mallory" // ignored: the subject is the key
			e.Status = billing.StatusActive
			e.Tier = "pro"
			e.CustomerID = "cus_alice"
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if got.Subject != "alice" || got.UpdatedAt.IsZero() {
			t.Fatalf("Update returned %+v, want subject alice and UpdatedAt set", got)
		}
		stored, err := s.Get(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if stored.Status != billing.StatusActive || stored.Tier != "pro" || !stored.UpdatedAt.Equal(got.UpdatedAt) {
			t.Fatalf("Get = %+v, want %+v", stored, got)
		}
		sub, err := s.SubjectByCustomer(ctx, "cus_alice")
		if err != nil || sub != "alice" {
			t.Fatalf("SubjectByCustomer = %q, %v; want alice", sub, err)
		}
	})

	t.Run("fn error stores nothing", func(t *testing.T) {
		boom := errors.New("boom")
		_, _, err := s.Update(ctx, "bob", func(e *billing.Entitlement) error {
			e.Status = billing.StatusActive
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("Update error = %v, want boom", err)
		}
		if _, err := s.Get(ctx, "bob"); !errors.Is(err, billing.ErrNotFound) {
			t.Fatalf("Get(bob) error = %v, want ErrNotFound", err)
		}
	})

	t.Run("no change writes nothing", func(t *testing.T) {
		before, err := s.Get(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		after, _, err := s.Update(ctx, "alice", func(e *billing.Entitlement) error { e.Tier = "pro"; return nil })
		if err != nil {
			t.Fatal(err)
		}
		if !after.UpdatedAt.Equal(before.UpdatedAt) {
			t.Fatalf("UpdatedAt moved from %v to %v on a no-op update", before.UpdatedAt, after.UpdatedAt)
		}
	})

	t.Run("concurrent updates are atomic", func(t *testing.T) {
		const n = 40
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _, err := s.Update(ctx, "counter", func(e *billing.Entitlement) error {
					c, _ := strconv.Atoi(e.Tier)
					e.Tier = strconv.Itoa(c + 1)
					return nil
				})
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.Get(ctx, "counter")
		if err != nil {
			t.Fatal(err)
		}
		if got.Tier != strconv.Itoa(n) {
			t.Fatalf("after %d concurrent increments the counter is %s: an update was lost", n, got.Tier)
		}
	})

	t.Run("for each", func(t *testing.T) {
		want := map[string]bool{"alice": true, "counter": true}
		for i := 0; i < 150; i++ { // enough subjects to land on every cluster master
			sub := fmt.Sprintf("user-%03d", i)
			want[sub] = true
			if _, _, err := s.Update(ctx, sub, func(e *billing.Entitlement) error { e.Status = billing.StatusActive; return nil }); err != nil {
				t.Fatal(err)
			}
		}
		seen := map[string]int{}
		if err := s.ForEach(ctx, func(e billing.Entitlement) error { seen[e.Subject]++; return nil }); err != nil {
			t.Fatal(err)
		}
		for sub := range want {
			if seen[sub] != 1 {
				t.Errorf("ForEach saw %q %d times, want once", sub, seen[sub])
			}
		}
		if len(seen) != len(want) {
			t.Errorf("ForEach saw %d subjects, want %d", len(seen), len(want))
		}
		stop := errors.New("stop")
		calls := 0
		err := s.ForEach(ctx, func(billing.Entitlement) error { calls++; return stop })
		if !errors.Is(err, stop) || calls != 1 {
			t.Fatalf("ForEach with a failing fn: err %v after %d calls, want stop after 1", err, calls)
		}
	})
}

// TestRedisStoreExpiry checks the documented expiry of both keys: none for a
// live entitlement, Retention for a terminal one, and none again when it is
// revived.
func TestRedisStoreExpiry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := realRedis(t)
	s, err := billing.NewRedisStore(rdb, billing.RedisOptions{Prefix: "bk", Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.Key("alice"), "bk:{alice}:ent"; got != want {
		t.Fatalf("Key = %q, want %q", got, want)
	}
	if got, want := s.CustomerKey("cus_1"), "bk:cust:{cus_1}"; got != want {
		t.Fatalf("CustomerKey = %q, want %q", got, want)
	}
	set := func(st billing.Status) {
		t.Helper()
		if _, _, err := s.Update(ctx, "alice", func(e *billing.Entitlement) error {
			e.Status, e.CustomerID = st, "cus_1"
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	ttls := func() (ent, cust time.Duration) {
		return rdb.PTTL(ctx, s.Key("alice")).Val(), rdb.PTTL(ctx, s.CustomerKey("cus_1")).Val()
	}
	set(billing.StatusActive)
	if ent, cust := ttls(); ent > 0 || cust > 0 {
		t.Fatalf("live entitlement TTLs = %v, %v; want none", ent, cust)
	}
	set(billing.StatusCanceled)
	if ent, cust := ttls(); ent <= 59*time.Minute || ent > time.Hour || cust <= 59*time.Minute || cust > time.Hour {
		t.Fatalf("canceled entitlement TTLs = %v, %v; want about 1h", ent, cust)
	}
	set(billing.StatusActive)
	if ent, cust := ttls(); ent > 0 || cust > 0 {
		t.Fatalf("revived entitlement TTLs = %v, %v; want none", ent, cust)
	}
}

func TestNewRedisStoreValidates(t *testing.T) {
	t.Parallel()
	if _, err := billing.NewRedisStore(nil, billing.RedisOptions{}); !errors.Is(err, billing.ErrInvalidConfig) {
		t.Errorf("nil client: err = %v", err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	for _, cfg := range []billing.RedisOptions{{Prefix: "a{b"}, {Retention: -1}} {
		if _, err := billing.NewRedisStore(rdb, cfg); !errors.Is(err, billing.ErrInvalidConfig) {
			t.Errorf("%+v: err = %v, want ErrInvalidConfig", cfg, err)
		}
	}
}
