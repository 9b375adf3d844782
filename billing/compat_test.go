package billing_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/quota"
	"github.com/billkit/billkit/webhook/webhooktest"
)

// TestStoredEntitlementStaysReadable: an entitlement as an earlier release
// stored it (testdata/entitlement-past-due.json, written by the code of
// December 2026 after a checkout, an active subscription and a failed
// invoice) is read with its derived fields and the facts they come from:
// an older event still changes nothing, and the paid invoice that follows
// makes it active, which only its stored subscription fact allows.
func TestStoredEntitlementStaysReadable(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("testdata/entitlement-past-due.json")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rdb := miniRedis(t)
	store := newRedisStore(t, rdb)
	if err := rdb.HSet(ctx, store.Key("alice"), "data", data, "rev", 1).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, store.CustomerKey("cus_1"), "alice", 0).Err(); err != nil {
		t.Fatal(err)
	}
	e, err := store.Get(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	want := quota.Period{Start: t0, End: t0.AddDate(0, 1, 0)}
	if e.Status != billing.StatusPastDue || e.Tier != "pro" || e.Period != want || e.MeteredItemID != "si_metered" ||
		e.SubscriptionID != "sub_1" || e.CustomerID != "cus_1" || !e.GraceUntil.Equal(sec(5).Add(gracePeriod)) {
		t.Fatalf("stored entitlement read as %+v", e)
	}

	sh := newest(t)
	h := newHarness(t, store, nil)
	h.deliver(sh.event("evt_old", evUpdated, sh.sub(sub{Status: "incomplete", Metered: true}), sec(0)))
	if got := h.get("alice"); got.Status != billing.StatusPastDue || !got.UpdatedAt.Equal(e.UpdatedAt) {
		t.Fatalf("an older event changed the stored entitlement: %s, updated %v", got.Status, got.UpdatedAt)
	}
	h.deliver(sh.event("evt_paid", evPaid, sh.inv(inv{ID: "in_2", FinalizedAt: sec(5)}), sec(20)))
	if got := h.get("alice"); got.Status != billing.StatusActive || got.Period != want || got.MeteredItemID != "si_metered" {
		t.Fatalf("after invoice.paid: %s over %v (item %q), want active over %v with the stored subscription's item",
			got.Status, got.Period, got.MeteredItemID, want)
	}
}

// TestUpdateReportsChange: Update says whether it changed the entitlement,
// whatever the clock says, so that a coarse clock never hides a change
// (OnChange and the limits cache depend on it).
func TestUpdateReportsChange(t *testing.T) {
	t.Parallel()
	for name, open := range storeFactories() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			ctx := context.Background()
			set := func(tier string) bool {
				t.Helper()
				_, changed, err := s.Update(ctx, "alice", func(e *billing.Entitlement) error { e.Tier = tier; return nil })
				if err != nil {
					t.Fatal(err)
				}
				return changed
			}
			if !set("pro") || set("pro") || !set("starter") {
				t.Fatal("Update's changed flag: want true, false, true for pro, pro again, starter")
			}
		})
	}

	// A clock that never moves: the lifecycle still sees each change.
	frozen := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	store := billing.NewMemoryStore(billing.MemoryOptions{Now: func() time.Time { return frozen }})
	var changes int
	h := newHarness(t, store, func(c *billing.Config) {
		c.OnChange = func(context.Context, billing.Entitlement, billing.Entitlement) { changes++ }
	})
	sh := newest(t)
	h.deliver(
		sh.event("evt_1", evCreated, sh.sub(sub{Status: "active"}), sec(1)),
		sh.event("evt_2", evUpdated, sh.sub(sub{Status: "active", Price: "price_starter"}), sec(2)),
		sh.event("evt_2", evUpdated, sh.sub(sub{Status: "active", Price: "price_starter"}), sec(2)),
	)
	if changes != 2 {
		t.Fatalf("OnChange called %d times under a frozen clock, want 2", changes)
	}
	if l, err := h.limits.Limits(context.Background(), "alice", quota.DefaultMeter); err != nil || l.Plan != "starter" {
		t.Fatalf("limits after the change = %+v, %v; want starter at once", l, err)
	}
}

// TestSubjectRule: the stores refuse a subject that breaks billkit's one
// subject rule, and an event naming one is refused (reported, never
// stored) rather than failing forever as a store error.
func TestSubjectRule(t *testing.T) {
	t.Parallel()
	bad := []string{"", strings.Repeat("a", 201), "a{b", "a}b", "a\nb", "\xff"}
	for name, open := range storeFactories() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			ctx := context.Background()
			for _, subj := range bad {
				if _, _, err := s.Update(ctx, subj, func(*billing.Entitlement) error { return nil }); !errors.Is(err, billing.ErrInvalidSubject) {
					t.Errorf("Update(%q) = %v, want ErrInvalidSubject", subj, err)
				}
				if _, err := s.Get(ctx, subj); !errors.Is(err, billing.ErrInvalidSubject) {
					t.Errorf("Get(%q) = %v, want ErrInvalidSubject", subj, err)
				}
			}
			if _, _, err := s.Update(ctx, strings.Repeat("a", 200), func(*billing.Entitlement) error { return nil }); err != nil {
				t.Errorf("a 200-byte subject: %v", err)
			}
		})
	}
	forShapes(t, func(t *testing.T, sh shape) {
		var reported []*billing.EventError
		h := newHarness(t, billing.NewMemoryStore(billing.MemoryOptions{}), func(c *billing.Config) {
			c.OnEventError = func(_ context.Context, err *billing.EventError) { reported = append(reported, err) }
		})
		st := webhooktest.Deliver(t, h.h, testSecret,
			sh.event("evt_bad_subject", evCreated, sh.sub(sub{Status: "active", Subject: "acct{42}"}), sec(1)))
		if st[0] != http.StatusInternalServerError || len(reported) != 1 || !errors.Is(reported[0], billing.ErrUnreadable) {
			t.Fatalf("status %d, reports %v; want 500 and one ErrUnreadable", st[0], reported)
		}
		if err := h.lc.Link(context.Background(), "acct\n42", "cus_1"); !errors.Is(err, billing.ErrInvalidSubject) {
			t.Fatalf("Link with a bad subject = %v, want ErrInvalidSubject", err)
		}
	})
}
