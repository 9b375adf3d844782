package webhook

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"time"
)

// MemoryStore is a [Store] that keeps records in process memory. It suits a
// single process and tests; deliveries spread over several processes need a
// shared store such as [RedisStore].
//
// Memory is bounded by the records' expiry: expired leases and done records
// are swept away as the store is used (amortized constant time per call),
// so the store holds at most about twice the records that are alive.
//
// A MemoryStore is safe for concurrent use. Use [NewMemoryStore]; the zero
// value is not usable.
type MemoryStore struct {
	now func() time.Time

	mu      sync.Mutex
	records map[string]memRecord
	ops     int // calls since the last sweep
}

type memRecord struct {
	token   string // empty when done
	expires time.Time
}

var _ Store = (*MemoryStore)(nil)

// MemoryOptions configures a [MemoryStore]. The zero value is valid: every
// zero field means its documented default.
type MemoryOptions struct {
	// Now returns the current time, against which leases and records
	// expire. Tests pass a fake clock to expire them without sleeping. The
	// default value is [time.Now].
	Now func() time.Time
}

// NewMemoryStore returns an empty MemoryStore configured by opts.
func NewMemoryStore(opts MemoryOptions) *MemoryStore {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &MemoryStore{now: now, records: make(map[string]memRecord)}
}

// Claim implements [Store.Claim].
func (s *MemoryStore) Claim(ctx context.Context, eventID string, lease time.Duration) (Claim, error) {
	if eventID == "" || lease <= 0 {
		return Claim{}, fmt.Errorf("%w: empty event id or non-positive lease", ErrInvalidArgument)
	}
	if err := ctx.Err(); err != nil {
		return Claim{}, err
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maybeSweep(now)
	if rec, ok := s.records[eventID]; ok && now.Before(rec.expires) {
		if rec.token == "" {
			return Claim{Status: Done}, nil
		}
		return Claim{Status: InFlight}, nil
	}
	token := newToken()
	s.records[eventID] = memRecord{token: token, expires: now.Add(lease)}
	return Claim{Status: Claimed, Token: token}, nil
}

// Complete implements [Store.Complete].
func (s *MemoryStore) Complete(ctx context.Context, eventID, token string, retention time.Duration) error {
	if eventID == "" || token == "" || retention <= 0 {
		return fmt.Errorf("%w: empty event id or token, or non-positive retention", ErrInvalidArgument)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.records[eventID]
	if !ok || rec.token != token || !now.Before(rec.expires) {
		return ErrLeaseLost
	}
	s.records[eventID] = memRecord{expires: now.Add(retention)}
	return nil
}

// Release implements [Store.Release].
func (s *MemoryStore) Release(ctx context.Context, eventID, token string) error {
	if eventID == "" || token == "" {
		return fmt.Errorf("%w: empty event id or token", ErrInvalidArgument)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.records[eventID]
	if !ok || rec.token != token || !now.Before(rec.expires) {
		return ErrLeaseLost
	}
	delete(s.records, eventID)
	return nil
}

// size returns the number of records alive now (leases and done records),
// after removing the expired ones.
func (s *MemoryStore) size() int {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep(now)
	return len(s.records)
}

// maybeSweep removes expired records once the calls since the last sweep
// reach the number of records, which keeps the cost amortized constant.
func (s *MemoryStore) maybeSweep(now time.Time) {
	s.ops++
	if s.ops >= len(s.records) && s.ops >= 64 {
		s.sweep(now)
	}
}

func (s *MemoryStore) sweep(now time.Time) {
	for id, rec := range s.records {
		if !now.Before(rec.expires) {
			delete(s.records, id)
		}
	}
	s.ops = 0
}

// newToken returns a random lease token.
func newToken() string { return rand.Text() }
