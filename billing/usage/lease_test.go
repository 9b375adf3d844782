package usage

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func testLeaseContract(t *testing.T, mk func(t *testing.T) (leaseStore, func(subject string) time.Duration)) {
	ctx := context.Background()

	t.Run("exclusive until released by its token", func(t *testing.T) {
		s, ttl := mk(t)
		tok, ok, err := s.Acquire(ctx, "alice", time.Minute)
		if !ok || err != nil || tok == "" {
			t.Fatalf("Acquire = %q, %v, %v; want a token", tok, ok, err)
		}
		if ttl != nil {
			if d := ttl("alice"); d <= 0 || d > time.Minute {
				t.Fatalf("lease TTL = %v; want in (0, 1m]", d)
			}
		}
		if _, ok, _ := s.Acquire(ctx, "alice", time.Minute); ok {
			t.Fatal("second Acquire of a held lease succeeded")
		}
		if _, ok, _ := s.Acquire(ctx, "bob", time.Minute); !ok {
			t.Fatal("another subject's lease was not granted")
		}
		if err := s.Release(ctx, "alice", "not-the-token"); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := s.Acquire(ctx, "alice", time.Minute); ok {
			t.Fatal("Release with a wrong token freed the lease")
		}
		if err := s.Release(ctx, "alice", tok); err != nil {
			t.Fatal(err)
		}
		tok2, ok, _ := s.Acquire(ctx, "alice", time.Minute)
		if !ok || tok2 == tok {
			t.Fatalf("Acquire after Release = %q, %v; want a new token", tok2, ok)
		}
		// The old holder's late release must not free the new holder's lease.
		if err := s.Release(ctx, "alice", tok); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := s.Acquire(ctx, "alice", time.Minute); ok {
			t.Fatal("a stale token released the new holder's lease")
		}
	})

	t.Run("concurrent acquires: one wins", func(t *testing.T) {
		s, _ := mk(t)
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i := 0; i < 16; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, ok, err := s.Acquire(ctx, "carol", time.Minute)
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
			t.Fatalf("%d concurrent Acquires won; want 1", wins.Load())
		}
	})
}

// TestMemoryLeaseExpires checks that a dead holder's lease expires after
// its TTL (B4).
func TestMemoryLeaseExpires(t *testing.T) {
	t.Parallel()
	clock := newTestClock(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC))
	s := newMemoryLeases(clock.Now)
	ctx := context.Background()
	if _, ok, _ := s.Acquire(ctx, "a", time.Minute); !ok {
		t.Fatal("Acquire failed")
	}
	clock.Add(time.Minute - time.Millisecond)
	if _, ok, _ := s.Acquire(ctx, "a", time.Minute); ok {
		t.Fatal("lease taken before it expired")
	}
	clock.Add(time.Millisecond)
	if _, ok, _ := s.Acquire(ctx, "a", time.Minute); !ok {
		t.Fatal("expired lease not granted again")
	}
}

// TestRedisLeaseKey checks the key layout and that a short TTL is
// rejected rather than rounded to no expiry.
func TestRedisLeaseKey(t *testing.T) {
	t.Parallel()
	s := &redisLeases{prefix: "billkit"}
	if got, want := s.key("alice"), "billkit:{alice}:lease:report"; got != want {
		t.Fatalf("Key = %q; want %q", got, want)
	}
	if _, _, err := s.Acquire(context.Background(), "a", time.Microsecond); err == nil {
		t.Fatal("Acquire with a TTL under 1ms succeeded")
	}
}
