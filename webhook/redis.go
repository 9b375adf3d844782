package webhook

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultPrefix is the default key prefix of a [RedisStore].
const DefaultPrefix = "billkit"

// RedisOptions configures a [RedisStore]. The zero value is valid: every
// zero field means its documented default.
type RedisOptions struct {
	// Prefix starts every key; an event's key is PREFIX:wh:{EVENT_ID}, the
	// event ID being the Cluster hash tag, so a prefix must not hold a
	// brace. The default value is [DefaultPrefix] ("billkit").
	Prefix string
}

// RedisStore is a [Store] in Redis: standalone, Sentinel or Cluster, through
// a [redis.UniversalClient]. Each event has one string key,
// PREFIX:wh:{EVENT_ID}, holding "c:TOKEN" with a millisecond expiry of the
// lease while claimed, and "d" with an expiry of the retention once done.
// No key is ever written without an expiry. Every operation is one Lua
// script (EVALSHA, with EVAL as fallback) over that one key, so it is atomic
// and Cluster-safe.
//
// A RedisStore is safe for concurrent use. Use [NewRedisStore]; the zero
// value is not usable.
type RedisStore struct {
	rdb    redis.UniversalClient
	prefix string
}

var _ Store = (*RedisStore)(nil)

// NewRedisStore returns a RedisStore on rdb configured by opts. It returns
// an error wrapping [ErrInvalidConfig] when rdb is nil or opts.Prefix holds
// a brace (it would break the hash tag).
func NewRedisStore(rdb redis.UniversalClient, opts RedisOptions) (*RedisStore, error) {
	if rdb == nil {
		return nil, fmt.Errorf("%w: nil redis client", ErrInvalidConfig)
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if strings.ContainsAny(opts.Prefix, "{}") {
		return nil, fmt.Errorf("%w: Prefix %q holds a brace", ErrInvalidConfig, opts.Prefix)
	}
	return &RedisStore{rdb: rdb, prefix: opts.Prefix}, nil
}

// key returns the key that holds eventID's record.
func (s *RedisStore) key(eventID string) string {
	return s.prefix + ":wh:{" + eventID + "}"
}

// claimScript: KEYS[1] the event key, ARGV[1] token, ARGV[2] lease in ms.
// Returns {1} when claimed, {2} when done, {3} when in flight.
var claimScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], 'c:' .. ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == 'd' then return 2 end
return 3
`)

// completeScript: KEYS[1] the event key, ARGV[1] token, ARGV[2] retention
// in ms. Returns 1 when done, 0 when the token does not hold the lease.
var completeScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= 'c:' .. ARGV[1] then return 0 end
redis.call('SET', KEYS[1], 'd', 'PX', ARGV[2])
return 1
`)

// releaseScript: KEYS[1] the event key, ARGV[1] token. Returns 1 when
// released, 0 when the token does not hold the lease.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= 'c:' .. ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
`)

// Claim implements [Store.Claim].
func (s *RedisStore) Claim(ctx context.Context, eventID string, lease time.Duration) (Claim, error) {
	if eventID == "" || lease < time.Millisecond {
		return Claim{}, fmt.Errorf("%w: empty event id or lease under 1ms", ErrInvalidArgument)
	}
	token := newToken()
	n, err := claimScript.Run(ctx, s.rdb, []string{s.key(eventID)}, token, lease.Milliseconds()).Int()
	if err != nil {
		return Claim{}, fmt.Errorf("webhook: redis claim: %w", err)
	}
	switch n {
	case 1:
		return Claim{Status: Claimed, Token: token}, nil
	case 2:
		return Claim{Status: Done}, nil
	default:
		return Claim{Status: InFlight}, nil
	}
}

// Complete implements [Store.Complete].
func (s *RedisStore) Complete(ctx context.Context, eventID, token string, retention time.Duration) error {
	if eventID == "" || token == "" || retention < time.Millisecond {
		return fmt.Errorf("%w: empty event id or token, or retention under 1ms", ErrInvalidArgument)
	}
	n, err := completeScript.Run(ctx, s.rdb, []string{s.key(eventID)}, token, retention.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("webhook: redis complete: %w", err)
	}
	if n == 0 {
		return ErrLeaseLost
	}
	return nil
}

// Release implements [Store.Release].
func (s *RedisStore) Release(ctx context.Context, eventID, token string) error {
	if eventID == "" || token == "" {
		return fmt.Errorf("%w: empty event id or token", ErrInvalidArgument)
	}
	n, err := releaseScript.Run(ctx, s.rdb, []string{s.key(eventID)}, token).Int()
	if err != nil {
		return fmt.Errorf("webhook: redis release: %w", err)
	}
	if n == 0 {
		return ErrLeaseLost
	}
	return nil
}
