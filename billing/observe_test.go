package billing_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/billkit/billkit/billing"
)

// observations records what a billing.Observer sees.
type observations struct {
	mu      sync.Mutex
	events  []billing.EventObservation
	changes [][2]billing.Entitlement
	recs    []error
	ch      chan billing.EventObservation
}

func (o *observations) observer() billing.Observer {
	return billing.Observer{
		Event: func(_ context.Context, e billing.EventObservation) {
			o.mu.Lock()
			o.events = append(o.events, e)
			o.mu.Unlock()
			if o.ch != nil {
				o.ch <- e
			}
		},
		Changed: func(_ context.Context, before, after billing.Entitlement) {
			o.mu.Lock()
			o.changes = append(o.changes, [2]billing.Entitlement{before, after})
			o.mu.Unlock()
		},
		Reconciled: func(_ context.Context, r billing.ReconcileObservation) {
			o.mu.Lock()
			o.recs = append(o.recs, r.Err)
			o.mu.Unlock()
		},
	}
}

func (o *observations) last(t *testing.T) billing.EventObservation {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.events) == 0 {
		t.Fatal("no event observed")
	}
	return o.events[len(o.events)-1]
}

// TestObserverEventOutcomes delivers, in every shape, events that the
// lifecycle applies, finds unchanged, ignores, parks and refuses, and
// checks the one observation each produces and the changes observed.
func TestObserverEventOutcomes(t *testing.T) {
	t.Parallel()
	forShapes(t, func(t *testing.T, sh shape) {
		var obs observations
		h := newHarness(t, billing.NewMemoryStore(billing.MemoryOptions{}), func(c *billing.Config) {
			c.Observer = obs.observer()
			c.Logger = slog.New(slog.DiscardHandler)
		})
		active := sh.sub(sub{Status: "active"})
		steps := []struct {
			name    string
			event   []byte
			status  int
			outcome billing.EventOutcome
		}{
			{"applied", sh.event("evt_a", evCreated, active, sec(1)), 200, billing.EventApplied},
			{"unchanged (older)", sh.event("evt_b", evUpdated, active, sec(0)), 200, billing.EventUnchanged},
			{"ignored", sh.event("evt_c", evCreated, sh.sub(sub{ID: "sub_x", Customer: "cus_x", Price: "price_other", NoMetadata: true, Status: "active"}), sec(2)), 200, billing.EventIgnored},
			{"parked", sh.event("evt_d", evCreated, sh.sub(sub{ID: "sub_2", Customer: "cus_2", NoMetadata: true, Status: "active"}), sec(3)), 200, billing.EventParked},
			{"refused", sh.event("evt_e", evUpdated, withoutPeriod(sh.sub(sub{Status: "active"})), sec(4)), 500, billing.EventRefused},
		}
		for _, s := range steps {
			if st := deliverOne(t, h, s.event); st != s.status {
				t.Fatalf("%s: answered %d, want %d", s.name, st, s.status)
			}
			o := obs.last(t)
			if o.Outcome != s.outcome || o.EventType == "" || o.APIVersion != sh.APIVersion || o.EventID == "" || o.Duration <= 0 {
				t.Errorf("%s: observed %+v, want outcome %v with the event's identity", s.name, o, s.outcome)
			}
			if (o.Err != nil) != (s.status != http.StatusOK) {
				t.Errorf("%s: Err = %v", s.name, o.Err)
			}
		}
		if o := obs.last(t); !errors.Is(o.Err, billing.ErrUnreadable) {
			t.Errorf("refused event's Err = %v, want ErrUnreadable", o.Err)
		}
		obs.mu.Lock()
		defer obs.mu.Unlock()
		if len(obs.events) != len(steps) {
			t.Errorf("%d events observed, want %d", len(obs.events), len(steps))
		}
		if len(obs.changes) != 1 || obs.changes[0][1].Status != billing.StatusActive || obs.changes[0][1].Tier != "pro" {
			t.Errorf("changes observed %+v, want one to active pro", obs.changes)
		}
	})
}

// TestObserverFailedAndReconciled checks the outcome of an event whose
// store fails, and that Reconcile is observed, also when it fails.
func TestObserverFailedAndReconciled(t *testing.T) {
	t.Parallel()
	sh := newest(t)
	var obs observations
	store := &brokenStore{EntitlementStore: billing.NewMemoryStore(billing.MemoryOptions{})}
	h := newHarness(t, store, func(c *billing.Config) {
		c.Observer = obs.observer()
		c.Logger = slog.New(slog.DiscardHandler)
	})
	if st := deliverOne(t, h, sh.event("evt_f", evCreated, sh.sub(sub{Status: "active"}), sec(1))); st != http.StatusInternalServerError {
		t.Fatalf("answered %d with a failing store, want 500", st)
	}
	if o := obs.last(t); o.Outcome != billing.EventFailed || o.Err == nil {
		t.Errorf("observed %+v, want failed with an error", o)
	}
	_, err := h.lc.Reconcile(context.Background()) // no Stripe client: fails at once
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.recs) != 1 || !errors.Is(obs.recs[0], billing.ErrInvalidConfig) || !errors.Is(err, billing.ErrInvalidConfig) {
		t.Errorf("reconciliations observed %v (Reconcile: %v), want one with ErrInvalidConfig", obs.recs, err)
	}
}

// brokenStore is an entitlement store whose updates fail.
type brokenStore struct{ billing.EntitlementStore }

func (*brokenStore) Update(context.Context, string, func(*billing.Entitlement) error) (billing.Entitlement, bool, error) {
	return billing.Entitlement{}, false, errors.New("store down")
}

// TestObserverUnmapped checks that a parked event dropped by the sweep is
// observed as unmapped.
func TestObserverUnmapped(t *testing.T) {
	t.Parallel()
	sh := newest(t)
	obs := observations{ch: make(chan billing.EventObservation, 16)}
	h := newHarness(t, billing.NewMemoryStore(billing.MemoryOptions{}), func(c *billing.Config) {
		c.Observer = obs.observer()
		c.ParkFor = time.Hour
		c.ReconcileEvery = 24 * time.Hour
		c.Logger = slog.New(slog.DiscardHandler)
	})
	h.deliver(sh.event("evt_p", evCreated, sh.sub(sub{Customer: "cus_9", NoMetadata: true, Status: "active"}), sec(1)))
	<-obs.ch // parked
	h.clock.Add(2 * time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.lc.Run(ctx) }()
	defer func() { cancel(); <-done }()
	guard := time.NewTimer(5 * time.Second) // failure guard only
	defer guard.Stop()
	select {
	case o := <-obs.ch:
		if o.Outcome != billing.EventUnmapped || o.EventID != "evt_p" || o.EventType != string(evCreated) || !errors.Is(o.Err, billing.ErrUnmapped) {
			t.Errorf("observed %+v, want evt_p unmapped", o)
		}
	case <-guard.C:
		t.Fatal("the dropped parked event was not observed")
	}
}

func TestEventOutcomeString(t *testing.T) {
	t.Parallel()
	var got []string
	for o := billing.EventOutcome(0); o <= billing.EventFailed+1; o++ {
		got = append(got, o.String())
	}
	want := []string{"unknown", "applied", "unchanged", "ignored", "parked", "refused", "unmapped", "failed", "unknown"}
	if !slices.Equal(got, want) {
		t.Errorf("names %v, want %v", got, want)
	}
}
