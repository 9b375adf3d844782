package billing_test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/webhook/webhooktest"
)

// lifecycles are event sequences of one subscription, each event created
// in its own second.
func lifecycles(sh shape) map[string][][]byte {
	p2 := t0.AddDate(0, 1, 0)
	renewed := sub{Status: "active", Metered: true, Start: p2, End: p2.AddDate(0, 1, 0)}
	pastDue := renewed
	pastDue.Status = "past_due"
	base := [][]byte{
		sh.event("evt_01", evCheckout, sh.session("alice", "cus_1", "sub_1"), sec(0)),
		sh.event("evt_02", evCreated, sh.sub(sub{Status: "incomplete", Metered: true}), sec(1)),
		sh.event("evt_03", evPaid, sh.inv(inv{ID: "in_1", FinalizedAt: sec(1)}), sec(2)),
		sh.event("evt_04", evUpdated, sh.sub(sub{Status: "active", Metered: true}), sec(3)),
		sh.event("evt_05", evUpdated, sh.sub(renewed), sec(4)),
		sh.event("evt_06", evFailed, sh.inv(inv{ID: "in_2", FinalizedAt: sec(4)}), sec(5)),
		sh.event("evt_07", evUpdated, sh.sub(pastDue), sec(6)),
	}
	recovered := append(base[:len(base):len(base)],
		sh.event("evt_08", evPaid, sh.inv(inv{ID: "in_2", FinalizedAt: sec(4)}), sec(7)),
		sh.event("evt_09", evUpdated, sh.sub(renewed), sec(8)),
	)
	canceled := append(recovered[:len(recovered):len(recovered)],
		sh.event("evt_10", evDeleted, sh.sub(renewed), sec(9)),
	)
	return map[string][][]byte{
		"ends past_due":  base,
		"ends recovered": recovered,
		"ends canceled":  canceled,
		// Upgraded within the first period, downgraded at the renewal:
		// the first period ended on pro.
		"downgraded at renewal": {
			sh.event("evt_21", evCheckout, sh.session("alice", "cus_1", "sub_1"), sec(0)),
			sh.event("evt_22", evCreated, sh.sub(sub{Status: "active", Price: "price_starter", Metered: true}), sec(1)),
			sh.event("evt_23", evUpdated, sh.sub(sub{Status: "active", Metered: true}), sec(2)),
			sh.event("evt_24", evUpdated, sh.sub(sub{Status: "active", Price: "price_starter", Metered: true, Start: p2, End: p2.AddDate(0, 1, 0)}), sec(3)),
		},
		// A subscription without billkit's metadata (created in the
		// Dashboard, say) whose events may come before the checkout that
		// links its customer: they are parked until then.
		"unmapped first": {
			sh.event("evt_31", evCheckout, sh.session("alice", "cus_1", "sub_1"), sec(0)),
			sh.event("evt_32", evCreated, sh.sub(sub{Status: "incomplete", Metered: true, NoMetadata: true}), sec(1)),
			sh.event("evt_33", evPaid, sh.inv(inv{ID: "in_1", FinalizedAt: sec(1), NoMetadata: true}), sec(2)),
			sh.event("evt_34", evUpdated, sh.sub(sub{Status: "active", Metered: true, NoMetadata: true}), sec(3)),
			sh.event("evt_35", evUpdated, sh.sub(sub{Status: "active", Metered: true, NoMetadata: true, Start: p2, End: p2.AddDate(0, 1, 0)}), sec(4)),
		},
		"paid before created": {
			sh.event("evt_11", evCheckout, sh.session("alice", "cus_1", "sub_1"), sec(0)),
			sh.event("evt_12", evCreated, sh.sub(sub{Status: "incomplete", Metered: true}), sec(1)),
			sh.event("evt_13", evPaid, sh.inv(inv{ID: "in_1", FinalizedAt: sec(1)}), sec(2)),
		},
	}
}

// comparable returns e without its write time, as JSON.
func comparable(t testing.TB, e billing.Entitlement) string {
	t.Helper()
	e.UpdatedAt = time.Time{}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestPermutationsConverge (B2): every permutation of a lifecycle's events,
// with duplicates, ends in the same entitlement as the events in order.
// Half the runs go through the webhook handler (which drops duplicate
// deliveries), half call HandleEvent directly so that the lifecycle itself
// sees every duplicate.
func TestPermutationsConverge(t *testing.T) {
	t.Parallel()
	const runs = 64 // per lifecycle and shape
	forShapes(t, func(t *testing.T, sh shape) { testPermutationsConverge(t, sh, runs) })
}

func testPermutationsConverge(t *testing.T, sh shape, runs int) {
	for name, events := range lifecycles(sh) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ref := newHarness(t, billing.NewMemoryStore(billing.MemoryOptions{}), nil)
			ref.deliver(events...)
			want := comparable(t, ref.get("alice"))

			decoded := make([]*stripe.Event, len(events))
			for i, raw := range events {
				decoded[i] = &stripe.Event{}
				if err := json.Unmarshal(raw, decoded[i]); err != nil {
					t.Fatal(err)
				}
			}
			for run := 0; run < runs; run++ {
				seed := uint64(run) + 1
				h := newHarness(t, billing.NewMemoryStore(billing.MemoryOptions{}), nil)
				if run%2 == 0 {
					d := webhooktest.Deliverer{Secret: testSecret, Copies: 2, Shuffle: true, Seed: seed}
					for _, r := range d.Deliver(t, h.h, events...) {
						if r.Status != http.StatusOK {
							t.Fatalf("seed %d: delivery of %s answered %d", seed, r.EventID, r.Status)
						}
					}
				} else {
					rng := rand.New(rand.NewPCG(seed, seed*31))
					order := make([]int, 0, 3*len(events))
					for i := range events {
						for range 1 + rng.IntN(3) {
							order = append(order, i)
						}
					}
					rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
					for _, i := range order {
						if err := h.lc.HandleEvent(context.Background(), decoded[i]); err != nil {
							t.Fatalf("seed %d: HandleEvent(%s): %v", seed, decoded[i].ID, err)
						}
					}
				}
				if got := comparable(t, h.get("alice")); got != want {
					t.Fatalf("seed %d: permutation ends in\n%s\nin order:\n%s", seed, got, want)
				}
			}
		})
	}
}

// TestPermutationsExpected pins what the in-order sequences end in, so that
// convergence to a wrong state would fail too.
func TestPermutationsExpected(t *testing.T) {
	t.Parallel()
	want := map[string]billing.Status{
		"ends past_due": billing.StatusPastDue, "ends recovered": billing.StatusActive,
		"ends canceled": billing.StatusCanceled, "paid before created": billing.StatusActive,
		"downgraded at renewal": billing.StatusActive, "unmapped first": billing.StatusActive,
	}
	forShapes(t, func(t *testing.T, sh shape) { testPermutationsExpected(t, sh, want) })
}

func testPermutationsExpected(t *testing.T, sh shape, want map[string]billing.Status) {
	for name, events := range lifecycles(sh) {
		h := newHarness(t, billing.NewMemoryStore(billing.MemoryOptions{}), nil)
		h.deliver(events...)
		e := h.get("alice")
		if e.Status != want[name] || e.MeteredItemID != "si_metered" {
			t.Errorf("%s: ends %s (metered item %q), want %s with si_metered", name, e.Status, e.MeteredItemID, want[name])
		}
		if name == "unmapped first" && (e.Period.Start != t0.AddDate(0, 1, 0) || e.PreviousPeriod.Start != t0 || e.CustomerID != "cus_1") {
			t.Errorf("%s: period %v, previous %v, customer %q; want the renewed period after the first, cus_1", name, e.Period, e.PreviousPeriod, e.CustomerID)
		}
		if name == "ends recovered" && e.PreviousPeriod.Start != t0 {
			t.Errorf("%s: PreviousPeriod = %v, want the first period", name, e.PreviousPeriod)
		}
		if name == "downgraded at renewal" && (e.Tier != "starter" || e.PreviousTier != "pro" || e.PreviousPeriod.Start != t0) {
			t.Errorf("%s: tier %q, previous tier %q of %v; want starter after pro of the first period", name, e.Tier, e.PreviousTier, e.PreviousPeriod)
		}
		if name == "ends past_due" && !e.GraceUntil.Equal(sec(4).Add(gracePeriod)) {
			t.Errorf("%s: GraceUntil = %v, want the failed invoice's finalization + 7 days", name, e.GraceUntil)
		}
	}
}
