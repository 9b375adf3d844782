package webhooktest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/billkit/billkit/webhook"
)

// StoreUnderTest is one store given to [TestStore].
type StoreUnderTest struct {
	// Store is the store to test. It must start empty of the event IDs the
	// suite uses (they start with "evt_conformance_").
	Store webhook.Store
	// Advance lets d pass on the store's clock: step a fake clock, call
	// miniredis's FastForward, or, for a server with its own clock, shorten
	// the expiries of the store's records by d (billkit's tests of its
	// RedisStore on redis-server do that with a Lua script). Sleeping works
	// too, with a short Lease, but makes the suite slow and timing-bound.
	// Required.
	Advance func(d time.Duration)
	// Lease is the lease the suite claims with; the retention it completes
	// with is three leases. The default value is one minute.
	Lease time.Duration
}

// TestStore is the conformance suite of [webhook.Store]: claim, duplicate,
// complete, release, a crashed holder's lease expiring (and not before),
// token fencing, done records expiring after their retention, and 50
// concurrent claims of one event granting exactly one lease. open is called
// once per subtest and returns a fresh store (subtests run in parallel).
//
// Run it on your own Store implementation:
//
//	func TestMyStore(t *testing.T) {
//		webhooktest.TestStore(t, func(t *testing.T) webhooktest.StoreUnderTest {
//			clock := newFakeClock()
//			return webhooktest.StoreUnderTest{Store: newMyStore(clock.Now), Advance: clock.Advance}
//		})
//	}
func TestStore(t *testing.T, open func(t *testing.T) StoreUnderTest) {
	t.Helper()
	type env struct {
		s       webhook.Store
		advance func(time.Duration)
		lease   time.Duration
		ctx     context.Context
	}
	setup := func(t *testing.T) env {
		t.Helper()
		t.Parallel()
		u := open(t)
		if u.Store == nil || u.Advance == nil {
			t.Fatal("webhooktest: StoreUnderTest needs Store and Advance")
		}
		lease := u.Lease
		if lease == 0 {
			lease = time.Minute
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		t.Cleanup(cancel)
		return env{u.Store, u.Advance, lease, ctx}
	}
	id := func(t *testing.T) string { return "evt_conformance_" + t.Name() }
	claim := func(t *testing.T, e env, id string, want webhook.ClaimStatus) webhook.Claim {
		t.Helper()
		c, err := e.s.Claim(e.ctx, id, e.lease)
		if err != nil {
			t.Fatalf("Claim(%s): %v", id, err)
		}
		if c.Status != want {
			t.Fatalf("Claim(%s) = %v, want %v", id, c.Status, want)
		}
		if (c.Token != "") != (want == webhook.Claimed) {
			t.Fatalf("Claim(%s) = %v with token %q: a token comes with Claimed only", id, c.Status, c.Token)
		}
		return c
	}
	wantLeaseLost := func(t *testing.T, what string, err error) {
		t.Helper()
		if !errors.Is(err, webhook.ErrLeaseLost) {
			t.Fatalf("%s = %v, want ErrLeaseLost", what, err)
		}
	}

	t.Run("ClaimThenInFlight", func(t *testing.T) {
		e := setup(t)
		claim(t, e, id(t), webhook.Claimed)
		claim(t, e, id(t), webhook.InFlight)
		claim(t, e, id(t)+"_other", webhook.Claimed)
	})
	t.Run("CompleteThenDone", func(t *testing.T) {
		e := setup(t)
		c := claim(t, e, id(t), webhook.Claimed)
		if err := e.s.Complete(e.ctx, id(t), c.Token, 3*e.lease); err != nil {
			t.Fatalf("Complete: %v", err)
		}
		claim(t, e, id(t), webhook.Done)
		// A done record outlives the lease.
		e.advance(e.lease + e.lease/2)
		claim(t, e, id(t), webhook.Done)
		// Completing again with the same token may succeed (a store whose
		// handler marks the event done in its own transaction) or report
		// ErrLeaseLost; either way the event stays done.
		if err := e.s.Complete(e.ctx, id(t), c.Token, 3*e.lease); err != nil && !errors.Is(err, webhook.ErrLeaseLost) {
			t.Fatalf("second Complete: %v", err)
		}
		wantLeaseLost(t, "Release after Complete", e.s.Release(e.ctx, id(t), c.Token))
		claim(t, e, id(t), webhook.Done)
	})
	t.Run("ReleaseThenClaimAgain", func(t *testing.T) {
		e := setup(t)
		c1 := claim(t, e, id(t), webhook.Claimed)
		if err := e.s.Release(e.ctx, id(t), c1.Token); err != nil {
			t.Fatalf("Release: %v", err)
		}
		c2 := claim(t, e, id(t), webhook.Claimed)
		if c2.Token == c1.Token {
			t.Fatalf("a new claim reused token %q", c1.Token)
		}
		wantLeaseLost(t, "Release with the released token", e.s.Release(e.ctx, id(t), c1.Token))
		claim(t, e, id(t), webhook.InFlight)
	})
	t.Run("CrashedHolderExpiresAfterLeaseNotBefore", func(t *testing.T) {
		e := setup(t)
		claim(t, e, id(t), webhook.Claimed) // the holder dies: no Complete, no Release
		e.advance(e.lease / 2)
		claim(t, e, id(t), webhook.InFlight)
		e.advance(e.lease/2 + e.lease/4)
		claim(t, e, id(t), webhook.Claimed)
	})
	t.Run("TokenFencing", func(t *testing.T) {
		e := setup(t)
		old := claim(t, e, id(t), webhook.Claimed)
		e.advance(e.lease + e.lease/4)
		cur := claim(t, e, id(t), webhook.Claimed)
		wantLeaseLost(t, "Complete with the expired token", e.s.Complete(e.ctx, id(t), old.Token, 3*e.lease))
		wantLeaseLost(t, "Release with the expired token", e.s.Release(e.ctx, id(t), old.Token))
		claim(t, e, id(t), webhook.InFlight)
		if err := e.s.Complete(e.ctx, id(t), cur.Token, 3*e.lease); err != nil {
			t.Fatalf("Complete by the current holder: %v", err)
		}
		claim(t, e, id(t), webhook.Done)
	})
	t.Run("UnknownToken", func(t *testing.T) {
		e := setup(t)
		wantLeaseLost(t, "Release of an unclaimed event", e.s.Release(e.ctx, id(t), "nobody"))
		wantLeaseLost(t, "Complete of an unclaimed event", e.s.Complete(e.ctx, id(t), "nobody", 3*e.lease))
		claim(t, e, id(t), webhook.Claimed)
		wantLeaseLost(t, "Release with a wrong token", e.s.Release(e.ctx, id(t), "nobody"))
		wantLeaseLost(t, "Complete with a wrong token", e.s.Complete(e.ctx, id(t), "nobody", 3*e.lease))
		claim(t, e, id(t), webhook.InFlight)
	})
	t.Run("DoneExpiresAfterRetention", func(t *testing.T) {
		e := setup(t)
		c := claim(t, e, id(t), webhook.Claimed)
		if err := e.s.Complete(e.ctx, id(t), c.Token, 3*e.lease); err != nil {
			t.Fatalf("Complete: %v", err)
		}
		e.advance(2 * e.lease)
		claim(t, e, id(t), webhook.Done)
		e.advance(e.lease + e.lease/2)
		claim(t, e, id(t), webhook.Claimed)
	})
	t.Run("ConcurrentClaimsGrantOneLease", func(t *testing.T) {
		e := setup(t)
		const n = 50
		var claimed, inFlight atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, n)
		start := make(chan struct{})
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				c, err := e.s.Claim(e.ctx, id(t), e.lease)
				switch {
				case err != nil:
					errs <- err
				case c.Status == webhook.Claimed:
					claimed.Add(1)
				case c.Status == webhook.InFlight:
					inFlight.Add(1)
				default:
					errs <- fmt.Errorf("unexpected status %v", c.Status)
				}
			}()
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if claimed.Load() != 1 || inFlight.Load() != n-1 {
			t.Fatalf("claimed %d, in flight %d; want 1 and %d", claimed.Load(), inFlight.Load(), n-1)
		}
	})
}
