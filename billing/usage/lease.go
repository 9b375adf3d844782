package usage

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// leaseStore grants one holder at a time the right to report a subject's
// usage. A lease expires after its TTL, so a holder that dies blocks the
// subject for at most that long. Implementations must be safe for
// concurrent use; errors mean the store could not answer.
type leaseStore interface {
	// Acquire takes subject's lease for ttl and returns its token, or
	// ok=false when another holder has it.
	Acquire(ctx context.Context, subject string, ttl time.Duration) (token string, ok bool, err error)
	// Release gives the lease back if token still holds it; releasing a
	// lease that expired or passed to another holder changes nothing.
	Release(ctx context.Context, subject, token string) error
}

// Compile-time interface checks.
var (
	_ leaseStore = (*memoryLeases)(nil)
	_ leaseStore = (*redisLeases)(nil)
)

// memoryLeases is a [leaseStore] in process memory: it coordinates the
// reporters of one process only. It is safe for concurrent use. Its zero
// value is ready to use with the system clock.
type memoryLeases struct {
	// Now is the clock that expires leases. Nil means time.Now.
	Now func() time.Time

	mu sync.Mutex
	m  map[string]memLease
}

type memLease struct {
	token    string
	expireAt time.Time
}

// newMemoryLeases returns an empty store that reads time from now (nil
// means time.Now).
func newMemoryLeases(now func() time.Time) *memoryLeases {
	return &memoryLeases{Now: now}
}

func (s *memoryLeases) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Acquire implements [leaseStore].
func (s *memoryLeases) Acquire(ctx context.Context, subject string, ttl time.Duration) (string, bool, error) {
	if err := ctx.Err(); err != nil {
		return "", false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if l, ok := s.m[subject]; ok && now.Before(l.expireAt) {
		return "", false, nil
	}
	if s.m == nil {
		s.m = make(map[string]memLease)
	}
	tok := rand.Text()
	s.m[subject] = memLease{token: tok, expireAt: now.Add(ttl)}
	return tok, true, nil
}

// Release implements [leaseStore].
func (s *memoryLeases) Release(_ context.Context, subject, token string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.m[subject]; ok && l.token == token {
		delete(s.m, subject)
	}
	return nil
}

// redisLeases is a [leaseStore] in Redis: the lease is the string key
// prefix:{subject}:lease:report holding the holder's random token, set
// with SET NX PX (so it always expires) and released by a script that
// deletes it only if it still holds the token.
//
// A redisLeases is safe for concurrent use. Its zero value is not
// usable; create one with [newRedisLeases].
type redisLeases struct {
	rdb    redis.UniversalClient
	prefix string
}

// newRedisLeases returns a store on rdb (standalone, Sentinel or
// Cluster).
func newRedisLeases(rdb redis.UniversalClient, opts redisOptions) *redisLeases {
	return &redisLeases{rdb: rdb, prefix: opts.prefix()}
}

// key returns the Redis key of subject's lease.
func (s *redisLeases) key(subject string) string {
	return s.prefix + ":{" + subject + "}:lease:report"
}

// Acquire implements [leaseStore].
func (s *redisLeases) Acquire(ctx context.Context, subject string, ttl time.Duration) (string, bool, error) {
	if ttl < time.Millisecond {
		return "", false, errors.New("billing: lease ttl under 1ms")
	}
	tok := rand.Text()
	err := s.rdb.SetArgs(ctx, s.key(subject), tok, redis.SetArgs{Mode: "NX", TTL: ttl}).Err()
	switch {
	case errors.Is(err, redis.Nil):
		return "", false, nil
	case err != nil:
		return "", false, fmt.Errorf("billing: acquire lease: %w", err)
	}
	return tok, true, nil
}

var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// Release implements [leaseStore].
func (s *redisLeases) Release(ctx context.Context, subject, token string) error {
	if err := releaseScript.Run(ctx, s.rdb, []string{s.key(subject)}, token).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("billing: release lease: %w", err)
	}
	return nil
}
