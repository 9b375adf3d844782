package billing_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/quota"
)

const (
	evCheckout = stripe.EventTypeCheckoutSessionCompleted
	evCreated  = stripe.EventTypeCustomerSubscriptionCreated
	evUpdated  = stripe.EventTypeCustomerSubscriptionUpdated
	evDeleted  = stripe.EventTypeCustomerSubscriptionDeleted
	evPaused   = stripe.EventTypeCustomerSubscriptionPaused
	evPaid     = stripe.EventTypeInvoicePaid
	evFailed   = stripe.EventTypeInvoicePaymentFailed
)

func sec(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }

type transition struct {
	name   string
	grace  billing.GracePolicy
	events func() [][]byte
	status billing.Status
	tier   string
	plan   string // the limits' Plan, or "" for quota.ErrNoPlan
	check  func(t *testing.T, h *harness, e billing.Entitlement)
}

// transitions are the entitlement's transitions (B1), each through signed
// deliveries to the real webhook handler.
func transitions(sh shape) []transition {
	return []transition{
		{
			name: "none to pending: checkout completed",
			events: func() [][]byte {
				return [][]byte{sh.event("evt_co", evCheckout, sh.session("alice", "cus_1", "sub_1"), sec(0))}
			},
			status: billing.StatusPending, tier: "pro", plan: "provisional",
			check: func(t *testing.T, h *harness, e billing.Entitlement) {
				if e.CustomerID != "cus_1" {
					t.Errorf("CustomerID = %q, want cus_1", e.CustomerID)
				}
				if s, err := h.store.SubjectByCustomer(context.Background(), "cus_1"); err != nil || s != "alice" {
					t.Errorf("customer index = %q, %v; want alice", s, err)
				}
			},
		},
		{
			name: "pending to incomplete: subscription created unpaid",
			events: func() [][]byte {
				return [][]byte{
					sh.event("evt_co", evCheckout, sh.session("alice", "cus_1", "sub_1"), sec(0)),
					sh.event("evt_cr", evCreated, sh.sub(sub{Status: "incomplete"}), sec(1)),
				}
			},
			status: billing.StatusIncomplete, tier: "pro", plan: "",
		},
		{
			name: "pending to active: first invoice paid",
			events: func() [][]byte {
				return [][]byte{
					sh.event("evt_co", evCheckout, sh.session("alice", "cus_1", "sub_1"), sec(0)),
					sh.event("evt_paid", evPaid, sh.inv(inv{}), sec(1)),
				}
			},
			status: billing.StatusActive, tier: "pro", plan: "pro",
		},
		{
			name: "incomplete to active: invoice paid in the same second",
			events: func() [][]byte {
				return [][]byte{
					sh.event("evt_paid", evPaid, sh.inv(inv{}), sec(1)),
					sh.event("evt_cr", evCreated, sh.sub(sub{Status: "incomplete"}), sec(1)),
				}
			},
			status: billing.StatusActive, tier: "pro", plan: "pro",
		},
		{
			name: "active: subscription created with items and period",
			events: func() [][]byte {
				return [][]byte{sh.event("evt_cr", evCreated, sh.sub(sub{Status: "active", Metered: true}), sec(1))}
			},
			status: billing.StatusActive, tier: "pro", plan: "pro",
			check: func(t *testing.T, h *harness, e billing.Entitlement) {
				if e.MeteredItemID != "si_metered" || e.SubscriptionID != "sub_1" {
					t.Errorf("items: metered %q, subscription %q; want si_metered, sub_1", e.MeteredItemID, e.SubscriptionID)
				}
				want := quota.Period{Start: t0, End: t0.AddDate(0, 1, 0)}
				if e.Period != want {
					t.Errorf("Period = %v, want %v", e.Period, want)
				}
				l, _ := h.limits.Limits(context.Background(), "alice", quota.DefaultMeter)
				if l.Period != want || l.Included != 10000 || !l.Overage {
					t.Errorf("limits = %+v, want the pro plan over the subscription period", l)
				}
			},
		},
		{
			name: "trialing",
			events: func() [][]byte {
				return [][]byte{sh.event("evt_cr", evCreated, sh.sub(sub{Status: "trialing"}), sec(1))}
			},
			status: billing.StatusTrialing, tier: "pro", plan: "pro",
		},
		{
			name: "updated: tier changes with the price, renewal keeps the previous period",
			events: func() [][]byte {
				p2 := t0.AddDate(0, 1, 0)
				return [][]byte{
					sh.event("evt_cr", evCreated, sh.sub(sub{Status: "active"}), sec(1)),
					sh.event("evt_up", evUpdated, sh.sub(sub{Status: "active", Price: "price_starter", Start: p2, End: p2.AddDate(0, 1, 0)}), sec(2)),
				}
			},
			status: billing.StatusActive, tier: "starter", plan: "starter",
			check: func(t *testing.T, h *harness, e billing.Entitlement) {
				if want := (quota.Period{Start: t0, End: t0.AddDate(0, 1, 0)}); e.PreviousPeriod != want {
					t.Errorf("PreviousPeriod = %v, want %v", e.PreviousPeriod, want)
				}
			},
		},
		{
			name: "active to past_due: payment failed, grace kept (default 7 days)",
			events: func() [][]byte {
				return [][]byte{
					sh.event("evt_cr", evCreated, sh.sub(sub{Status: "active"}), sec(1)),
					sh.event("evt_fail", evFailed, sh.inv(inv{ID: "in_2", FinalizedAt: sec(5)}), sec(10)),
				}
			},
			status: billing.StatusPastDue, tier: "pro", plan: "pro",
			check: func(t *testing.T, h *harness, e billing.Entitlement) {
				if want := sec(5).Add(gracePeriod); !e.GraceUntil.Equal(want) || e.GraceTier != "pro" {
					t.Errorf("grace = %v %q, want %v pro", e.GraceUntil, e.GraceTier, want)
				}
				h.clock.Set(e.GraceUntil)
				if _, err := h.limits.Limits(context.Background(), "alice", quota.DefaultMeter); !errors.Is(err, quota.ErrNoPlan) {
					t.Errorf("after the grace period: err = %v, want ErrNoPlan", err)
				}
			},
		},
		{
			name:  "past_due with a downgrade policy",
			grace: billing.DowngradeTo("starter", time.Hour),
			events: func() [][]byte {
				return [][]byte{
					sh.event("evt_cr", evCreated, sh.sub(sub{Status: "active"}), sec(1)),
					sh.event("evt_pd", evUpdated, sh.sub(sub{Status: "past_due"}), sec(10)),
				}
			},
			status: billing.StatusPastDue, tier: "pro", plan: "starter",
			check: func(t *testing.T, h *harness, e billing.Entitlement) {
				if want := sec(10).Add(time.Hour); !e.GraceUntil.Equal(want) {
					t.Errorf("GraceUntil = %v, want %v", e.GraceUntil, want)
				}
			},
		},
		{
			name:  "past_due with the suspend policy",
			grace: billing.Suspend(),
			events: func() [][]byte {
				return [][]byte{
					sh.event("evt_cr", evCreated, sh.sub(sub{Status: "active"}), sec(1)),
					sh.event("evt_fail", evFailed, sh.inv(inv{FinalizedAt: sec(5)}), sec(10)),
				}
			},
			status: billing.StatusPastDue, tier: "pro", plan: "",
		},
		{
			name: "past_due to active: invoice paid",
			events: func() [][]byte {
				return [][]byte{
					sh.event("evt_cr", evCreated, sh.sub(sub{Status: "active"}), sec(1)),
					sh.event("evt_fail", evFailed, sh.inv(inv{FinalizedAt: sec(5)}), sec(10)),
					sh.event("evt_pd", evUpdated, sh.sub(sub{Status: "past_due"}), sec(10)),
					sh.event("evt_paid", evPaid, sh.inv(inv{}), sec(20)),
				}
			},
			status: billing.StatusActive, tier: "pro", plan: "pro",
			check: func(t *testing.T, h *harness, e billing.Entitlement) {
				if !e.GraceUntil.IsZero() || e.GraceTier != "" {
					t.Errorf("grace not cleared: %v %q", e.GraceUntil, e.GraceTier)
				}
			},
		},
		{
			name: "past_due to unpaid",
			events: func() [][]byte {
				return [][]byte{
					sh.event("evt_pd", evUpdated, sh.sub(sub{Status: "past_due"}), sec(10)),
					sh.event("evt_un", evUpdated, sh.sub(sub{Status: "unpaid"}), sec(20)),
				}
			},
			status: billing.StatusUnpaid, tier: "pro", plan: "",
		},
		{
			name: "incomplete to incomplete_expired",
			events: func() [][]byte {
				return [][]byte{
					sh.event("evt_cr", evCreated, sh.sub(sub{Status: "incomplete"}), sec(1)),
					sh.event("evt_exp", evUpdated, sh.sub(sub{Status: "incomplete_expired"}), sec(2)),
				}
			},
			status: billing.StatusIncompleteExpired, tier: "pro", plan: "",
		},
		{
			name: "active to paused",
			events: func() [][]byte {
				return [][]byte{
					sh.event("evt_cr", evCreated, sh.sub(sub{Status: "active"}), sec(1)),
					sh.event("evt_pause", evPaused, sh.sub(sub{Status: "paused"}), sec(2)),
				}
			},
			status: billing.StatusPaused, tier: "pro", plan: "",
		},
		{
			name: "active to canceled: subscription deleted revokes",
			events: func() [][]byte {
				return [][]byte{
					sh.event("evt_cr", evCreated, sh.sub(sub{Status: "active"}), sec(1)),
					sh.event("evt_del", evDeleted, sh.sub(sub{Status: "active"}), sec(2)), // deleted means canceled whatever the payload says
				}
			},
			status: billing.StatusCanceled, tier: "pro", plan: "",
		},
		{
			name: "canceled to pending: a new checkout after the end",
			events: func() [][]byte {
				return [][]byte{
					sh.event("evt_del", evDeleted, sh.sub(sub{Status: "canceled"}), sec(2)),
					sh.event("evt_co2", evCheckout, sh.session("alice", "cus_1", "sub_2"), sec(3)),
				}
			},
			status: billing.StatusPending, tier: "pro", plan: "provisional",
		},
		{
			name: "subject from the customer index when metadata is missing",
			events: func() [][]byte {
				return [][]byte{
					sh.event("evt_co", evCheckout, sh.session("alice", "cus_1", "sub_1"), sec(0)),
					sh.event("evt_cr", evCreated, sh.sub(sub{Status: "active", NoMetadata: true}), sec(1)),
				}
			},
			status: billing.StatusActive, tier: "pro", plan: "pro",
		},
	}
}

func runTransition(t *testing.T, h *harness, tc transition) {
	t.Helper()
	h.deliver(tc.events()...)
	e := h.get("alice")
	if e.Status != tc.status || e.Tier != tc.tier {
		t.Fatalf("entitlement = %s/%s, want %s/%s", e.Status, e.Tier, tc.status, tc.tier)
	}
	l, err := h.limits.Limits(context.Background(), "alice", quota.DefaultMeter)
	switch {
	case tc.plan == "" && !errors.Is(err, quota.ErrNoPlan):
		t.Fatalf("limits = %+v, %v; want ErrNoPlan", l, err)
	case tc.plan != "" && (err != nil || l.Plan != tc.plan):
		t.Fatalf("limits = %+v, %v; want plan %s", l, err, tc.plan)
	}
	if tc.check != nil {
		tc.check(t, h, e)
	}
}

func TestTransitions(t *testing.T) {
	t.Parallel()
	forShapes(t, func(t *testing.T, sh shape) {
		for _, tc := range transitions(sh) {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				h := newHarness(t, billing.NewMemoryStore(billing.MemoryOptions{}), func(c *billing.Config) { c.Grace = tc.grace })
				runTransition(t, h, tc)
			})
		}
	})
}

// TestTransitionsRedis runs a subset of the transitions on a real
// redis-server.
func TestTransitionsRedis(t *testing.T) {
	t.Parallel()
	rdb := realRedis(t)
	subset := map[string]bool{
		"none to pending: checkout completed":                             true,
		"active: subscription created with items and period":              true,
		"active to past_due: payment failed, grace kept (default 7 days)": true,
		"active to canceled: subscription deleted revokes":                true,
		"subject from the customer index when metadata is missing":        true,
	}
	forShapes(t, func(t *testing.T, sh shape) {
		for i, tc := range transitions(sh) {
			if !subset[tc.name] {
				continue
			}
			t.Run(tc.name, func(t *testing.T) {
				store, err := billing.NewRedisStore(rdb, billing.RedisOptions{Prefix: sh.Name + string(rune('a'+i))})
				if err != nil {
					t.Fatal(err)
				}
				h := newHarness(t, store, func(c *billing.Config) { c.Grace = tc.grace })
				runTransition(t, h, tc)
			})
		}
	})
}

func TestUnknownSubjectAcknowledged(t *testing.T) {
	t.Parallel()
	forShapes(t, func(t *testing.T, sh shape) {
		h := newHarness(t, billing.NewMemoryStore(billing.MemoryOptions{}), nil)
		h.deliver(
			sh.event("evt_1", evCreated, sh.sub(sub{Status: "active", NoMetadata: true, Customer: "cus_stranger"}), sec(1)),
			sh.event("evt_2", evPaid, sh.inv(inv{NoMetadata: true, Customer: "cus_stranger"}), sec(2)),
			sh.event("evt_3", evCheckout, map[string]any{"id": "cs_x", "object": "checkout.session", "mode": "subscription"}, sec(3)),
		)
		n := 0
		h.store.ForEach(context.Background(), func(billing.Entitlement) error { n++; return nil })
		if n != 0 {
			t.Fatalf("%d entitlements stored for events of no known subject, want 0", n)
		}
	})
}

// TestStaleEventChangesNothing: an event older than the one applied last
// leaves the entitlement exactly as it was (B2).
func TestStaleEventChangesNothing(t *testing.T) {
	t.Parallel()
	forShapes(t, func(t *testing.T, sh shape) {
		h := newHarness(t, billing.NewMemoryStore(billing.MemoryOptions{}), nil)
		h.deliver(sh.event("evt_new", evUpdated, sh.sub(sub{Status: "canceled"}), sec(10)))
		before := h.get("alice")
		h.deliver(
			sh.event("evt_old", evUpdated, sh.sub(sub{Status: "active", Metered: true}), sec(9)),
			sh.event("evt_oldpaid", evPaid, sh.inv(inv{}), sec(5)),
			sh.event("evt_new", evUpdated, sh.sub(sub{Status: "canceled"}), sec(10)), // a duplicate of a handled event
		)
		after := h.get("alice")
		if !after.UpdatedAt.Equal(before.UpdatedAt) || after.Status != billing.StatusCanceled || after.MeteredItemID != "" {
			t.Fatalf("stale events changed the entitlement:\nbefore %+v\nafter  %+v", before, after)
		}
	})
}

// TestLiveSubscriptionWinsOverEndedOne: a late deletion of an old
// subscription does not revoke the subject's new one.
func TestLiveSubscriptionWinsOverEndedOne(t *testing.T) {
	t.Parallel()
	forShapes(t, func(t *testing.T, sh shape) {
		h := newHarness(t, billing.NewMemoryStore(billing.MemoryOptions{}), nil)
		h.deliver(
			sh.event("evt_a", evCreated, sh.sub(sub{ID: "sub_a", Status: "active"}), sec(1)),
			sh.event("evt_b", evCreated, sh.sub(sub{ID: "sub_b", Status: "active", Price: "price_starter"}), sec(11)),
			sh.event("evt_adel", evDeleted, sh.sub(sub{ID: "sub_a", Status: "canceled"}), sec(12)),
		)
		if e := h.get("alice"); e.Status != billing.StatusActive || e.SubscriptionID != "sub_b" {
			t.Fatalf("entitlement = %s on %s, want active on sub_b", e.Status, e.SubscriptionID)
		}
	})
}

func TestNewLifecycleValidates(t *testing.T) {
	t.Parallel()
	plans := testPlans(t)
	store := billing.NewMemoryStore(billing.MemoryOptions{})
	for name, cfg := range map[string]billing.Config{
		"no store":           {Plans: plans},
		"no plans":           {Store: store},
		"refetch no stripe":  {Store: store, Plans: plans, Refetch: true},
		"grace unknown tier": {Store: store, Plans: plans, Grace: billing.DowngradeTo("gold", time.Hour)},
	} {
		if _, err := billing.NewLifecycle(cfg); !errors.Is(err, billing.ErrInvalidConfig) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig", name, err)
		}
	}
}
