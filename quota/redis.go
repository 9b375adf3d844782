package quota

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Hash fields of a usage counter.
const (
	fieldUsed   = "used"
	fieldDenied = "denied"
)

// takeSource checks, counts and extends the expiry of one counter in one
// step. KEYS[1] is the counter (a hash); ARGV is cost, limit (0 = no cap)
// and the Unix second at which the counter may expire. It returns
// {allowed (1/0), used}. Integers go to Redis as the ARGV strings, never
// through Lua's float formatting. The expiry is set when the key has none and only
// ever moved later, never earlier. EXPIRETIME needs Redis 7.0.
const takeSource = `
local cost = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local exp = tonumber(ARGV[3])
local used = tonumber(redis.call('HGET', KEYS[1], 'used') or '0')
local allowed = 0
if limit == 0 or used + cost <= limit then
  used = redis.call('HINCRBY', KEYS[1], 'used', ARGV[1])
  allowed = 1
else
  redis.call('HINCRBY', KEYS[1], 'denied', ARGV[1])
end
if redis.call('EXPIRETIME', KEYS[1]) < exp then
  redis.call('EXPIREAT', KEYS[1], ARGV[3])
end
return {allowed, used}
`

// RedisOptions configures a [RedisStore]. The zero value uses the defaults.
type RedisOptions struct {
	// Prefix starts every key. The default is "billkit". It must not
	// contain '{' or '}'.
	Prefix string
}

func (o *RedisOptions) withDefaults() RedisOptions {
	out := *o
	if out.Prefix == "" {
		out.Prefix = "billkit"
	}
	return out
}

// RedisStore is a [Store] backed by Redis 7.0 or later: standalone,
// Sentinel or Cluster alike.
//
// Each counter is a hash at PREFIX:{SUBJECT}:usage:METER:PERIODID (see
// [RedisStore.Key]) with the fields "used" (billable units) and "denied"
// (units of denied requests). [RedisStore.Take] is one Lua script run with
// EVALSHA (one round trip) that checks the limit, counts, and sets the
// key's expiry to [TakeRequest.ExpireAt] if that is later than the current
// one, so a counter never lives without an expiry and its expiry is never
// shortened. The subject is the key's hash tag, so all of a subject's keys
// share a Cluster slot.
//
// A RedisStore is safe for concurrent use. The zero value is not usable;
// call [NewRedisStore].
type RedisStore struct {
	client redis.UniversalClient
	prefix string
	take   *redis.Script
}

var _ Store = (*RedisStore)(nil)

// NewRedisStore returns a RedisStore using client.
//
// The client must honour context deadlines, or a slow Redis could hold a
// decision past [Config.Deadline]: for *redis.Client, *redis.ClusterClient
// and *redis.Ring (what redis.NewUniversalClient returns) it returns
// [ErrNoContextTimeout] unless their options set ContextTimeoutEnabled.
func NewRedisStore(client redis.UniversalClient, opts RedisOptions) (*RedisStore, error) {
	if client == nil {
		return nil, fmt.Errorf("%w: nil redis client", ErrInvalidConfig)
	}
	o := opts.withDefaults()
	if strings.ContainsAny(o.Prefix, "{}") {
		return nil, fmt.Errorf("%w: key prefix %q contains a brace", ErrInvalidConfig, o.Prefix)
	}
	ctxTimeout := true
	switch c := client.(type) {
	case *redis.Client:
		ctxTimeout = c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		ctxTimeout = c.Options().ContextTimeoutEnabled
	case *redis.Ring:
		ctxTimeout = c.Options().ContextTimeoutEnabled
	}
	if !ctxTimeout {
		return nil, ErrNoContextTimeout
	}
	return &RedisStore{client: client, prefix: o.Prefix, take: redis.NewScript(takeSource)}, nil
}

// Key returns the Redis key of a counter, such as
// billkit:{alice}:usage:requests:20261101. It does not validate its
// arguments.
func (s *RedisStore) Key(subject, meter string, period Period) string {
	var b strings.Builder
	b.Grow(len(s.prefix) + len(subject) + len(meter) + 28)
	b.WriteString(s.prefix)
	b.WriteString(":{")
	b.WriteString(subject)
	b.WriteString("}:usage:")
	b.WriteString(meter)
	b.WriteByte(':')
	var id [16]byte
	b.Write(period.appendID(id[:0]))
	return b.String()
}

// Take implements [Store]. It costs one round trip (EVALSHA; EVAL once per
// server after a restart or SCRIPT FLUSH).
func (s *RedisStore) Take(ctx context.Context, req TakeRequest) (TakeResult, error) {
	if err := req.validate(); err != nil {
		return TakeResult{}, err
	}
	exp := unixCeil(req.ExpireAt)
	res, err := s.take.Run(ctx, s.client, []string{s.Key(req.Subject, req.Meter, req.Period)},
		req.Cost, req.Limit, exp).Int64Slice()
	if err != nil {
		return TakeResult{}, fmt.Errorf("quota: redis take: %w", err)
	}
	if len(res) != 2 {
		return TakeResult{}, fmt.Errorf("quota: redis take: unexpected reply of %d values", len(res))
	}
	return TakeResult{Allowed: res[0] == 1, Used: res[1]}, nil
}

// Usage implements [Store] with one HMGET.
func (s *RedisStore) Usage(ctx context.Context, subject, meter string, period Period) (Usage, error) {
	if err := validateUsage(subject, meter); err != nil {
		return Usage{}, err
	}
	vals, err := s.client.HMGet(ctx, s.Key(subject, meter, period), fieldUsed, fieldDenied).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return Usage{}, fmt.Errorf("quota: redis usage: %w", err)
	}
	var u Usage
	for i, v := range vals {
		str, ok := v.(string)
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(str, 10, 64)
		if err != nil {
			return Usage{}, fmt.Errorf("quota: redis usage: field %d: %w", i, err)
		}
		if i == 0 {
			u.Used = n
		} else {
			u.Denied = n
		}
	}
	return u, nil
}

// unixCeil returns t as Unix seconds, rounded up so that an expiry is never
// earlier than asked.
func unixCeil(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}
