package quota_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/billkit/billkit/quota"
)

func TestMemoryStoreExpiry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := newClock(nov30)
	st := quota.NewMemoryStore(quota.MemoryOptions{Now: clk.Now, SweepInterval: time.Hour})
	take := func(subject string, expireAt time.Time) {
		t.Helper()
		if _, err := st.Take(ctx, quota.TakeRequest{Subject: subject, Meter: "requests", Period: november, Cost: 1, Unlimited: true, ExpireAt: expireAt}); err != nil {
			t.Fatal(err)
		}
	}
	long, short := november.End.Add(10*24*time.Hour), november.End.Add(24*time.Hour)
	take("alice", long)
	take("alice", short) // must not shorten the expiry
	for i := 0; i < 50; i++ {
		take(fmt.Sprint("s", i), short)
	}
	if quota.MemoryLen(st) != 51 {
		t.Fatalf("Len = %d, want 51", quota.MemoryLen(st))
	}
	clk.Set(short) // the short counters expire now
	if u, _ := st.Usage(ctx, "s1", "requests", november); u != (quota.Usage{}) {
		t.Errorf("expired counter reads %+v, want zero", u)
	}
	if u, _ := st.Usage(ctx, "alice", "requests", november); u.Used != 2 {
		t.Errorf("alice's counter reads %+v, want Used 2 (its expiry must not have been shortened)", u)
	}
	take("bob", long) // a Take past the sweep interval sweeps
	if quota.MemoryLen(st) != 2 {
		t.Fatalf("after a sweep Len = %d, want 2 (alice, bob): expired counters must be removed", quota.MemoryLen(st))
	}
	clk.Set(long)
	take("carol", long.Add(time.Hour))
	if quota.MemoryLen(st) != 1 {
		t.Fatalf("Len = %d, want 1", quota.MemoryLen(st))
	}
	// An expired counter starts over.
	clk.Set(long.Add(2 * time.Hour))
	take("carol", long.Add(3*time.Hour))
	if u, _ := st.Usage(ctx, "carol", "requests", november); u.Used != 1 {
		t.Errorf("counter after expiry reads %+v, want Used 1", u)
	}
}
