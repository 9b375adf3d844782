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
// step. KEYS[1] is the counter (a hash); ARGV is cost, limit and the Unix
// second at which the counter may expire. A limit of -1 means no cap (a
// [TakeRequest.Unlimited] request; a TakeRequest's own Limit is never
// negative); a limit of 0 allows nothing. It returns one integer: used
// (>= 1) when the request is allowed, -1-used when it is denied (see
// [decodeTake]); one integer rather than an array keeps the reply to a
// single value.
//
// An allowed request costs two commands: HINCRBY adds the cost first, and
// the script takes it back (and counts it as denied) only when that went
// over the limit; no caller ever sees the intermediate count, since a
// script runs atomically. A cost above the limit never fits (with limit 0,
// no cost does) and is denied without touching "used"; an increment that
// would leave the int64 range is a denial when there is a limit (and
// Redis's error otherwise). Integers go to Redis as the ARGV strings, never
// through Lua's float formatting.
//
// The expiry is set when the key has none (a PERSIST by hand is undone by
// the next call) and only ever moved later, never earlier. EXPIRETIME needs
// Redis 7.0.
const takeSource = `
local key, cost, limit = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local capped = limit >= 0
local res
if capped and cost > limit then
  res = -1 - tonumber(redis.call('HGET', key, 'used') or '0')
  redis.call('HINCRBY', key, 'denied', ARGV[1])
else
  local used = redis.pcall('HINCRBY', key, 'used', ARGV[1])
  if type(used) == 'table' then
    if not capped then
      return used
    end
    res = -1 - tonumber(redis.call('HGET', key, 'used') or '0')
    redis.call('HINCRBY', key, 'denied', ARGV[1])
  elseif capped and used > limit then
    redis.call('HINCRBY', key, 'used', '-' .. ARGV[1])
    redis.call('HINCRBY', key, 'denied', ARGV[1])
    res = -1 - (used - cost)
  else
    res = used
  end
end
if redis.call('EXPIRETIME', key) < tonumber(ARGV[3]) then
  redis.call('EXPIREAT', key, ARGV[3])
end
return res
`

// noCap is the script's limit argument for an unlimited request.
const noCap = -1

// decodeTake turns the script's reply into a TakeResult.
func decodeTake(n int64) TakeResult {
	if n >= 0 {
		return TakeResult{Allowed: true, Used: n}
	}
	return TakeResult{Used: -1 - n}
}

// DefaultPrefix starts every Redis key when [RedisOptions.Prefix] is empty.
const DefaultPrefix = "billkit"

// RedisOptions configures a [RedisStore]. The zero value uses the defaults.
type RedisOptions struct {
	// Prefix starts every key. The default (the empty string) is
	// [DefaultPrefix]. It must not contain '{' or '}'.
	Prefix string
}

func (o *RedisOptions) withDefaults() RedisOptions {
	out := *o
	if out.Prefix == "" {
		out.Prefix = DefaultPrefix
	}
	return out
}

// RedisStore is a [Store] backed by Redis 7.0 or later: standalone,
// Sentinel or Cluster alike.
//
// Each counter is a hash at PREFIX:{SUBJECT}:usage:METER:PERIODID (such as
// billkit:{alice}:usage:requests:20261101; see the package documentation)
// with the fields "used" (billable units) and "denied"
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
	// The script's source and SHA-1, boxed once so that building a call
	// does not box them again.
	src, sha any
}

var _ Store = (*RedisStore)(nil)

// NewRedisStore returns a RedisStore using client, or an error wrapping
// [ErrInvalidConfig] for a nil client, a Prefix with a brace, or a client
// that does not honour context deadlines.
//
// The client must honour context deadlines, or a slow Redis could hold a
// decision past [Config.Deadline]: *redis.Client, *redis.ClusterClient and
// *redis.Ring (what redis.NewUniversalClient returns) must be built with
// ContextTimeoutEnabled set in their options.
func NewRedisStore(client redis.UniversalClient, opts RedisOptions) (*RedisStore, error) {
	if client == nil {
		return nil, fmt.Errorf("%w: nil redis client", ErrInvalidConfig)
	}
	o := opts.withDefaults()
	if strings.ContainsAny(o.Prefix, "{}") {
		return nil, fmt.Errorf("%w: Prefix %q contains a brace", ErrInvalidConfig, o.Prefix)
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
		return nil, fmt.Errorf("%w: redis client without ContextTimeoutEnabled: it would ignore the decision deadline (Config.Deadline) on reads, so set ContextTimeoutEnabled in its options", ErrInvalidConfig)
	}
	return &RedisStore{client: client, prefix: o.Prefix, src: takeSource, sha: redis.NewScript(takeSource).Hash()}, nil
}

// key returns the Redis key of a counter, such as
// billkit:{alice}:usage:requests:20261101. It does not validate its
// arguments.
func (s *RedisStore) key(subject, meter string, period Period) string {
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

// takeCall holds the arguments of one script call in one allocation: the
// command's argument slice points at the fields below (go-redis writes
// *string and *int64 like string and int64), so nothing is boxed per call.
// A call is never reused: a go-redis hook may keep the command.
type takeCall struct {
	args             [7]any
	key              string
	cost, limit, exp int64
}

// Take implements [Store]. It costs one round trip: EVALSHA, and EVAL
// instead once per server after a restart or SCRIPT FLUSH.
func (s *RedisStore) Take(ctx context.Context, req TakeRequest) (TakeResult, error) {
	if err := req.validate(); err != nil {
		return TakeResult{}, err
	}
	c := &takeCall{
		key:   s.key(req.Subject, req.Meter, req.Period),
		cost:  req.Cost,
		limit: req.Limit,
		exp:   unixCeil(req.ExpireAt),
	}
	if req.Unlimited {
		c.limit = noCap
	}
	c.args = [7]any{"evalsha", s.sha, 1, &c.key, &c.cost, &c.limit, &c.exp}
	n, err := s.run(ctx, c.args[:])
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		args := make([]any, len(c.args))
		copy(args, c.args[:])
		args[0], args[1] = "eval", s.src
		n, err = s.run(ctx, args)
	}
	if err != nil {
		return TakeResult{}, fmt.Errorf("quota: redis take: %w", err)
	}
	return decodeTake(n), nil
}

// run sends one EVALSHA or EVAL whose only key is args[3].
func (s *RedisStore) run(ctx context.Context, args []any) (int64, error) {
	cmd := redis.NewCmd(ctx, args...)
	cmd.SetFirstKeyPos(3)
	_ = s.client.Process(ctx, cmd)
	return cmd.Int64()
}

// Usage implements [Store] with one HMGET.
func (s *RedisStore) Usage(ctx context.Context, subject, meter string, period Period) (Usage, error) {
	if err := validateUsage(subject, meter); err != nil {
		return Usage{}, err
	}
	vals, err := s.client.HMGet(ctx, s.key(subject, meter, period), fieldUsed, fieldDenied).Result()
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
