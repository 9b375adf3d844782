package billing_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stripe/stripe-go/v76"

	"github.com/billkit/billkit/billing"
)

// BenchmarkLimitsCached measures the quota hot path's limits lookup when the
// entitlement is cached (no store read).
func BenchmarkLimitsCached(b *testing.B) {
	store := billing.NewMemoryStore(billing.MemoryOptions{})
	setStatus(b, store, "alice", billing.StatusActive)
	lc, err := billing.NewLifecycle(billing.Config{Store: store, Plans: testPlans(b), LimitsTTL: 1 << 62})
	if err != nil {
		b.Fatal(err)
	}
	l := lc.Limits()
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := l.Limits(ctx, "alice", "requests"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkHandleEvent measures applying one subscription event to the
// memory store (decoding, merging, deriving, storing).
func BenchmarkHandleEvent(b *testing.B) {
	h := newHarness(b, billing.NewMemoryStore(billing.MemoryOptions{}), nil)
	var ev stripe.Event
	sh := newest(b)
	if err := json.Unmarshal(sh.event("evt_1", evUpdated, sh.sub(sub{Status: "active", Metered: true}), sec(1)), &ev); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := h.lc.HandleEvent(ctx, &ev); err != nil {
			b.Fatal(err)
		}
	}
}
