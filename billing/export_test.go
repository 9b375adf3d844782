package billing

import (
	"context"
	"github.com/billkit/billkit/quota"
	"time"
)

// ParkingStore exposes the parking methods of the built-in stores to the
// external tests.
type ParkingStore interface {
	Park(ctx context.Context, customerID, eventID string, data []byte, ttl time.Duration) error
	Parked(ctx context.Context, customerID string) (map[string][]byte, error)
	Unpark(ctx context.Context, customerID string, eventIDs ...string) error
	ForEachParked(ctx context.Context, fn func(customerID string) error) error
}

// ErrParkFull is errParkFull, for the external tests.
var ErrParkFull = errParkFull

type parkingAdapter struct{ s parkingStore }

// AsParking returns the parking of a built-in store, or false.
func AsParking(s any) (ParkingStore, bool) {
	ps, ok := s.(parkingStore)
	if !ok {
		return nil, false
	}
	return parkingAdapter{ps}, true
}

func (a parkingAdapter) Park(ctx context.Context, customerID, eventID string, data []byte, ttl time.Duration) error {
	return a.s.park(ctx, customerID, eventID, data, ttl)
}

func (a parkingAdapter) Parked(ctx context.Context, customerID string) (map[string][]byte, error) {
	return a.s.parked(ctx, customerID)
}

func (a parkingAdapter) Unpark(ctx context.Context, customerID string, eventIDs ...string) error {
	return a.s.unpark(ctx, customerID, eventIDs...)
}

func (a parkingAdapter) ForEachParked(ctx context.Context, fn func(customerID string) error) error {
	return a.s.forEachParked(ctx, fn)
}

// For is limitsFor of the requests meter, for the external tests.
func (l *LimitsCache) For(e Entitlement, now time.Time) (quota.Limits, error) {
	return l.limitsFor(e, now, quota.DefaultMeter)
}

// ForMeter is limitsFor, for the external tests.
func (l *LimitsCache) ForMeter(e Entitlement, now time.Time, meter string) (quota.Limits, error) {
	return l.limitsFor(e, now, meter)
}

// Key and CustomerKey expose the Redis store's keys to the external tests.
func (s *RedisStore) Key(subject string) string            { return s.key(subject) }
func (s *RedisStore) CustomerKey(customerID string) string { return s.customerKey(customerID) }

// Waiting returns how many callers wait on the read of subject in flight.
func (l *LimitsCache) Waiting(subject string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c, ok := l.calls[subject]; ok {
		return c.waiters
	}
	return 0
}
