package billing

import (
	"context"
	"slices"
	"sync"
	"time"
)

// MemoryStore is an [EntitlementStore] in process memory, for tests and
// single-process deployments. It keeps every entitlement until the process
// ends (it has no retention). It is safe for concurrent use; the zero value
// is not usable, call [NewMemoryStore].
type MemoryStore struct {
	now func() time.Time

	mu   sync.Mutex
	ents map[string]Entitlement
	cust map[string]string
}

var _ EntitlementStore = (*MemoryStore)(nil)

// NewMemoryStore returns an empty store. now stamps UpdatedAt; nil means
// time.Now.
func NewMemoryStore(now func() time.Time) *MemoryStore {
	if now == nil {
		now = time.Now
	}
	return &MemoryStore{now: now, ents: map[string]Entitlement{}, cust: map[string]string{}}
}

// Get returns subject's entitlement, or ErrNotFound.
func (s *MemoryStore) Get(ctx context.Context, subject string) (Entitlement, error) {
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
func (s *MemoryStore) Update(ctx context.Context, subject string, fn func(*Entitlement) error) (Entitlement, error) {
	if err := ctx.Err(); err != nil {
		return Entitlement{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, found := s.ents[subject]
	next, changed, err := applyUpdate(subject, cur, found, s.now(), fn)
	if err != nil {
		return cur, err
	}
	if !changed {
		return next, nil
	}
	s.ents[subject] = next
	if next.CustomerID != "" {
		s.cust[next.CustomerID] = subject
	}
	return next, nil
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
