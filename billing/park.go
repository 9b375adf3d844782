package billing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/stripe/stripe-go/v76"
)

// DefaultParkFor is how long a parked event waits for its customer to be
// linked to a subject by default: longer than Stripe's three days of
// retries, so that a checkout.session.completed that Stripe keeps failing
// to deliver still arrives in time.
const defaultParkFor = 7 * 24 * time.Hour

// parkSlack is how much longer than ParkFor a store keeps a parked event,
// so that the lifecycle's sweep reports it before the store drops it.
const parkSlack = 7 * 24 * time.Hour

// ParkingStore keeps the events of Stripe customers that are not linked to a
// subject yet, until the link appears. The lifecycle stores opaque data
// under the customer and the event's ID. Implementations must be safe for
// concurrent use; [RedisStore] and [MemoryStore] implement it.
type parkingStore interface {
	// park keeps data under customerID and eventID, replacing what that
	// pair held, for at least ttl. It returns an error wrapping
	// [ErrParkFull] when the store's bound on parked events is reached.
	park(ctx context.Context, customerID, eventID string, data []byte, ttl time.Duration) error
	// parked returns the data parked under customerID by event ID; an
	// empty map when there is none.
	parked(ctx context.Context, customerID string) (map[string][]byte, error)
	// unpark removes events of customerID; unknown IDs are ignored.
	unpark(ctx context.Context, customerID string, eventIDs ...string) error
	// forEachParked calls fn with every customer that has parked events,
	// stopping at the first error fn returns. fn may call the store. It
	// must scale on Redis Cluster (no KEYS).
	forEachParked(ctx context.Context, fn func(customerID string) error) error
}

// parkedFact is what the lifecycle parks for one event: the facts it
// carries, already read, and what identifies the event.
type parkedFact struct {
	EventID      string            `json:"event_id"`
	EventType    string            `json:"event_type"`
	APIVersion   string            `json:"api_version,omitempty"`
	ParkedAt     time.Time         `json:"parked_at"`
	Subscription *subscriptionFact `json:"subscription,omitempty"`
	Invoice      *invoiceFact      `json:"invoice,omitempty"`
	Features     *featuresFact     `json:"features,omitempty"`
}

// park keeps the facts of ev, whose customer is linked to no subject yet,
// until the link appears: [Lifecycle.apply] of any later event of that
// customer, [Lifecycle.Link] and the sweep of [Lifecycle.Run] merge them
// into the subject's entitlement. Facts merge in any order to the same
// result, so the end state is the one of in-order delivery.
func (l *Lifecycle) park(ctx context.Context, log *slog.Logger, ev *stripe.Event, customer string, p parkedFact) error {
	if customer == "" {
		return unreadable(ev, "the object maps to no subject and names no customer")
	}
	p.EventID, p.EventType, p.APIVersion, p.ParkedAt = ev.ID, string(ev.Type), ev.APIVersion, l.cfg.Now().UTC()
	data, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("billing: encode parked event: %w", err)
	}
	if err := l.parking.park(ctx, customer, ev.ID, data, l.cfg.ParkFor+parkSlack); err != nil {
		if errors.Is(err, errParkFull) {
			return &EventError{EventID: ev.ID, EventType: string(ev.Type), APIVersion: ev.APIVersion,
				Err: fmt.Errorf("%w: customer %s: %w", ErrUnmapped, customer, err)}
		}
		return fmt.Errorf("billing: park event: %w", err)
	}
	log.InfoContext(ctx, "billing: event parked until its customer is linked to a subject", "customer", customer)
	if t := trackOf(ctx); t != nil {
		t.parked = true
	}
	// The link may have appeared since the lookup: look again, so that a
	// park racing a link is applied by one of the two.
	subject, err := l.subjectOf(ctx, nil, customer)
	if err != nil || subject == "" {
		return err
	}
	_, _, err = l.unpark(ctx, log, subject, customer)
	return err
}

// unpark merges the facts parked for customer into subject's entitlement
// and then removes them (a crash in between leaves them parked; merging
// them again changes nothing). It reports whether there were any, and the
// entitlement after.
func (l *Lifecycle) unpark(ctx context.Context, log *slog.Logger, subject, customer string) (Entitlement, bool, error) {
	parked, err := l.parking.parked(ctx, customer)
	if err != nil {
		return Entitlement{}, false, fmt.Errorf("billing: read parked events: %w", err)
	}
	if len(parked) == 0 {
		return Entitlement{}, false, nil
	}
	facts := make([]parkedFact, 0, len(parked))
	ids := make([]string, 0, len(parked))
	for id, data := range parked {
		ids = append(ids, id)
		var p parkedFact
		if err := json.Unmarshal(data, &p); err != nil {
			log.ErrorContext(ctx, "billing: undecodable parked event dropped", "parked_event_id", id, "err", err)
			continue
		}
		facts = append(facts, p)
	}
	_, after, err := l.write(ctx, log, subject, func(e *Entitlement) {
		for _, p := range facts {
			if p.Subscription != nil {
				mergeSubscription(e, *p.Subscription)
			}
			if p.Invoice != nil {
				mergeInvoice(e, *p.Invoice)
			}
			if p.Features != nil {
				mergeFeatures(e, *p.Features)
			}
		}
	})
	if err != nil {
		return Entitlement{}, false, err
	}
	if err := l.parking.unpark(ctx, customer, ids...); err != nil {
		return Entitlement{}, false, fmt.Errorf("billing: remove parked events: %w", err)
	}
	log.InfoContext(ctx, "billing: parked events applied", "subject", subject, "customer", customer, "events", len(ids))
	return after, true, nil
}

// Link links the Stripe customer customerID to subject, for subscriptions
// that did not start in billkit's checkout (created in the Dashboard, by a
// Payment Link or an older integration, without billkit's metadata): the
// customer's events are then applied to subject, those parked before the
// link included. It returns an error wrapping [ErrConflict] when subject's
// entitlement already belongs to another customer, or the customer to
// another subject.
func (l *Lifecycle) Link(ctx context.Context, subject, customerID string) error {
	if err := checkSubject(subject); err != nil {
		return fmt.Errorf("billing: link customer: %w", err)
	}
	if customerID == "" {
		return fmt.Errorf("%w: Link needs a customer", ErrInvalidConfig)
	}
	switch owner, err := l.cfg.Store.SubjectByCustomer(ctx, customerID); {
	case err == nil && owner != subject:
		return fmt.Errorf("billing: link customer: %w: the customer is linked to another subject", ErrConflict)
	case err != nil && !errors.Is(err, ErrNotFound):
		return fmt.Errorf("billing: link customer: %w", err)
	}
	var conflict error
	_, _, err := l.write(ctx, l.cfg.Logger, subject, func(e *Entitlement) {
		conflict = nil // fn may run again after a concurrent change
		if e.CustomerID != "" && e.CustomerID != customerID {
			conflict = fmt.Errorf("billing: link customer: %w: subject is linked to another customer", ErrConflict)
			return
		}
		e.CustomerID = customerID
	})
	if err != nil {
		return fmt.Errorf("billing: link customer: %w", err)
	}
	if conflict != nil {
		return conflict
	}
	_, _, err = l.unpark(ctx, l.cfg.Logger, subject, customerID)
	return err
}

// sweepParked applies the events parked for customers linked by now, and
// drops those parked longer than ParkFor, reporting each as [ErrUnmapped].
func (l *Lifecycle) sweepParked(ctx context.Context, log *slog.Logger) (applied int, dropped []string, err error) {
	err = l.parking.forEachParked(ctx, func(customer string) error {
		subject, err := l.subjectOf(ctx, nil, customer)
		if err != nil {
			return err
		}
		if subject != "" {
			_, ok, err := l.unpark(ctx, log, subject, customer)
			if ok {
				applied++
			}
			return err
		}
		parked, err := l.parking.parked(ctx, customer)
		if err != nil {
			return fmt.Errorf("billing: read parked events: %w", err)
		}
		now := l.cfg.Now()
		var old []string
		var reports []*EventError
		for id, data := range parked {
			var p parkedFact
			if json.Unmarshal(data, &p) == nil && now.Sub(p.ParkedAt) < l.cfg.ParkFor {
				continue
			}
			old = append(old, id)
			reports = append(reports, &EventError{EventID: id, EventType: p.EventType, APIVersion: p.APIVersion,
				Err: fmt.Errorf("%w: customer %s was linked to no subject within %s", ErrUnmapped, customer, l.cfg.ParkFor)})
		}
		if len(old) == 0 {
			return nil
		}
		// Removed first, reported then: an event whose removal failed is
		// dropped and reported by a later sweep, once.
		if err := l.parking.unpark(ctx, customer, old...); err != nil {
			return fmt.Errorf("billing: remove parked events: %w", err)
		}
		dropped = append(dropped, old...)
		for _, ee := range reports {
			l.report(ctx, ee)
			if obs := l.cfg.Observer.Event; obs != nil {
				obs(ctx, EventObservation{Outcome: EventUnmapped, EventID: ee.EventID, EventType: ee.EventType,
					APIVersion: ee.APIVersion, Err: ee})
			}
		}
		return nil
	})
	if err != nil {
		return applied, dropped, fmt.Errorf("billing: sweep parked events: %w", err)
	}
	return applied, dropped, nil
}
