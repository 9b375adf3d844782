package billing

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// MemoryStore is an [EntitlementStore] and a [ParkingStore] in process
// memory, for tests and single-process deployments. It keeps every
// entitlement until the process ends (it has no retention); parked events
// expire. It is safe for concurrent use; the zero value
// is not usable, call [NewMemoryStore].
type MemoryStore struct {
	now func() time.Time

	mu      sync.Mutex
	ents    map[string]Entitlement
	cust    map[string]string
	events  map[string]map[string]parkedEntry // parked: customer → event ID → entry
	nparked int
}

var (
	_ EntitlementStore = (*MemoryStore)(nil)
	_ parkingStore     = (*MemoryStore)(nil)
)

// MemoryOptions configures a [MemoryStore]. The zero value is valid.
type MemoryOptions struct {
	// Now stamps UpdatedAt and expires parked events. The default value
	// is time.Now.
	Now func() time.Time
}

// NewMemoryStore returns an empty store.
func NewMemoryStore(opts MemoryOptions) *MemoryStore {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &MemoryStore{now: now, ents: map[string]Entitlement{}, cust: map[string]string{},
		events: map[string]map[string]parkedEntry{}}
}

// Get returns subject's entitlement, or ErrNotFound.
func (s *MemoryStore) Get(ctx context.Context, subject string) (Entitlement, error) {
	if err := checkSubject(subject); err != nil {
		return Entitlement{}, err
	}
	if err := ctx.Err(); err != nil {
		return Entitlement{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.ents[subject]
	if !ok {
		return Entitlement{}, ErrNotFound
	}
	return e, nil
}

// Update implements [EntitlementStore.Update]; fn runs under the store's
// lock, once.
func (s *MemoryStore) Update(ctx context.Context, subject string, fn func(*Entitlement) error) (Entitlement, bool, error) {
	if err := checkSubject(subject); err != nil {
		return Entitlement{}, false, err
	}
	if err := ctx.Err(); err != nil {
		return Entitlement{}, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, found := s.ents[subject]
	next, changed, err := applyUpdate(subject, cur, found, s.now(), fn)
	if err != nil {
		return cur, false, err
	}
	if !changed {
		return next, false, nil
	}
	s.ents[subject] = next
	if next.CustomerID != "" {
		s.cust[next.CustomerID] = subject
	}
	return next, true, nil
}

// SubjectByCustomer returns the subject linked to customerID, or ErrNotFound.
func (s *MemoryStore) SubjectByCustomer(ctx context.Context, customerID string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sub, ok := s.cust[customerID]
	if !ok {
		return "", ErrNotFound
	}
	return sub, nil
}

// ForEach calls fn for every entitlement, in subject order, on a snapshot
// taken when it starts; fn may call the store.
func (s *MemoryStore) ForEach(ctx context.Context, fn func(Entitlement) error) error {
	s.mu.Lock()
	list := make([]Entitlement, 0, len(s.ents))
	for _, e := range s.ents {
		list = append(list, e)
	}
	s.mu.Unlock()
	slices.SortFunc(list, func(a, b Entitlement) int {
		switch {
		case a.Subject < b.Subject:
			return -1
		case a.Subject > b.Subject:
			return 1
		}
		return 0
	})
	for _, e := range list {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

// Bounds of the MemoryStore's parked events.
const (
	memoryParkPerCustomer = 100
	memoryParkTotal       = 100_000
)

type parkedEntry struct {
	data    []byte
	expires time.Time
}

// Park implements [ParkingStore.Park]. The store keeps at most 100 events
// per customer and 100,000 in all.
func (s *MemoryStore) park(ctx context.Context, customerID, eventID string, data []byte, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if ttl <= 0 {
		return fmt.Errorf("%w: park ttl must be positive", ErrInvalidConfig)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.expireParkedLocked(customerID, now)
	m := s.events[customerID]
	if _, ok := m[eventID]; !ok && (len(m) >= memoryParkPerCustomer || s.nparked >= memoryParkTotal) {
		return errParkFull
	}
	if m == nil {
		m = map[string]parkedEntry{}
		s.events[customerID] = m
	}
	if _, ok := m[eventID]; !ok {
		s.nparked++
	}
	m[eventID] = parkedEntry{data: slices.Clone(data), expires: now.Add(ttl)}
	return nil
}

// Parked implements [ParkingStore.Parked].
func (s *MemoryStore) parked(ctx context.Context, customerID string) (map[string][]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireParkedLocked(customerID, s.now())
	out := make(map[string][]byte, len(s.events[customerID]))
	for id, e := range s.events[customerID] {
		out[id] = slices.Clone(e.data)
	}
	return out, nil
}

// Unpark implements [ParkingStore.Unpark].
func (s *MemoryStore) unpark(ctx context.Context, customerID string, eventIDs ...string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.events[customerID]
	for _, id := range eventIDs {
		if _, ok := m[id]; ok {
			delete(m, id)
			s.nparked--
		}
	}
	if len(m) == 0 {
		delete(s.events, customerID)
	}
	return nil
}

// ForEachParked implements [ParkingStore.ForEachParked], in customer order,
// on a snapshot taken when it starts.
func (s *MemoryStore) forEachParked(ctx context.Context, fn func(customerID string) error) error {
	s.mu.Lock()
	now := s.now()
	var list []string
	for c := range s.events {
		s.expireParkedLocked(c, now)
		if len(s.events[c]) > 0 {
			list = append(list, c)
		}
	}
	s.mu.Unlock()
	slices.Sort(list)
	for _, c := range list {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(c); err != nil {
			return err
		}
	}
	return nil
}

func (s *MemoryStore) expireParkedLocked(customerID string, now time.Time) {
	m := s.events[customerID]
	for id, e := range m {
		if !now.Before(e.expires) {
			delete(m, id)
			s.nparked--
		}
	}
	if m != nil && len(m) == 0 {
		delete(s.events, customerID)
	}
}
