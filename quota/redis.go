package quota

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// pruneLua releases the expired holds of one counter: KEYS-free helper
// shared by the scripts. key is the counter, hkey its holds (a sorted set
// of "ID:AMOUNT" members scored by the hold's expiry in Unix
// milliseconds), now the store's clock in Unix milliseconds. Each expired
// hold's amount is taken off "reserved" with HINCRBY on the member's own
// digits (never through Lua's float formatting); it returns their sum.
const pruneLua = `
local function prune(key, hkey, now)
  local gone = redis.call('ZRANGEBYSCORE', hkey, '-inf', now)
  if #gone == 0 then
    return 0
  end
  local sum = 0
  for _, m in ipairs(gone) do
    local amt = string.match(m, ':(%d+)$')
    redis.call('HINCRBY', key, 'reserved', '-' .. amt)
    sum = sum + tonumber(amt)
  end
  redis.call('ZREMRANGEBYSCORE', hkey, '-inf', now)
  return sum
end
local function extend(key, exp)
  if redis.call('EXPIRETIME', key) < tonumber(exp) then
    redis.call('EXPIREAT', key, exp)
  end
end
`

// takeSource checks every meter of a take and, only if all fit, counts
// the request meter's cost and holds every reservation, in one step.
//
// KEYS[1] is the take's record (a string); then, for each meter i (the
// request meter first, then the holds), KEYS[2i] is its counter (a hash)
// and KEYS[2i+1] its holds (a sorted set). ARGV[1] is the store's clock in
// Unix milliseconds, ARGV[2] the record's lifetime in milliseconds (0: no
// record, for a take without ID), ARGV[3] the take's ID; then, for meter
// i, ARGV[4i] is the amount, ARGV[4i+1] the limit (-1: no cap; 0 allows
// nothing), ARGV[4i+2] the counter's expiry in Unix seconds, and ARGV[4i+3]
// the hold's expiry in Unix milliseconds (0 for the request meter, which
// is counted, not held).
//
// The record is written first, with SET NX: a record already there (the
// ID was used, or a refund's tombstone is waiting for this take) makes the
// take count nothing and fail with BILLKIT_DUPLICATE. A meter fits when
// used + reserved + amount <= limit, after the meter's expired holds (if
// it holds anything) have been released. When every meter fits, the
// request meter's "used" and each held meter's "reserved" grow by the
// amount (HINCRBY: exact integers) and each hold is added to its sorted
// set as "ID:AMOUNT"; an increment that would leave the int64 range undoes
// the ones before it and the take fails with Redis's error. When a meter
// does not fit, every meter's amount goes to its "denied" field and the
// record says so. Every counter written gets its expiry moved to its
// ARGV expiry when that is later (a counter never lives without one, and
// its expiry is never shortened); a holds set shares its counter's
// expiry. EXPIRETIME needs Redis 7.0.
//
// A take of one meter that holds nothing (the common case) replies with
// one integer: used (>= 0) when allowed, -1-used when denied (see
// [decodeTake]). Any other take replies with an array: the 1-based index
// of the meter that did not fit (0 when allowed), then used and reserved
// of each meter.
const takeSource = pruneLua + `
local now, rttl, id, rec = ARGV[1], tonumber(ARGV[2]), ARGV[3], KEYS[1]
local n = (#KEYS - 1) / 2
if rttl > 0 and not redis.call('SET', rec, 'a', 'NX', 'PX', ARGV[2]) then
  return {err = 'BILLKIT_DUPLICATE take ID already used or refunded'}
end
local used, held, deny = {}, {}, 0
for i = 1, n do
  local key, a = KEYS[2*i], 4*i
  local v = redis.call('HMGET', key, 'used', 'reserved')
  local u, r = tonumber(v[1] or '0'), tonumber(v[2] or '0')
  if r > 0 then
    r = r - prune(key, KEYS[2*i+1], now)
  end
  used[i], held[i] = u, r
  local limit = tonumber(ARGV[a+1])
  if deny == 0 and limit >= 0 and tonumber(ARGV[a]) > limit - u - r then
    deny = i
  end
end
local err
if deny == 0 then
  for i = 1, n do
    local a = 4*i
    local hold = ARGV[a+3] ~= '0'
    local v = redis.pcall('HINCRBY', KEYS[2*i], hold and 'reserved' or 'used', ARGV[a])
    if type(v) == 'table' then
      err = v
      for j = 1, i - 1 do
        local b = 4*j
        if ARGV[b+3] ~= '0' then
          redis.call('HINCRBY', KEYS[2*j], 'reserved', '-' .. ARGV[b])
          redis.call('ZREM', KEYS[2*j+1], id .. ':' .. ARGV[b])
        else
          redis.call('HINCRBY', KEYS[2*j], 'used', '-' .. ARGV[b])
        end
      end
      if rttl > 0 then
        redis.call('DEL', rec)
      end
      break
    end
    if hold then
      held[i] = v
      redis.call('ZADD', KEYS[2*i+1], ARGV[a+3], id .. ':' .. ARGV[a])
      extend(KEYS[2*i+1], ARGV[a+2])
    else
      used[i] = v
    end
  end
else
  for i = 1, n do
    redis.pcall('HINCRBY', KEYS[2*i], 'denied', ARGV[4*i])
  end
  if rttl > 0 then
    redis.call('SET', rec, 'd', 'PX', ARGV[2])
  end
end
for i = 1, n do
  extend(KEYS[2*i], ARGV[4*i+2])
end
if err then
  return err
end
if n == 1 and held[1] == 0 then
  if deny == 0 then
    return used[1]
  end
  return -1 - used[1]
end
local out = {deny}
for i = 1, n do
  out[2*i], out[2*i+1] = used[i], held[i]
end
return out
`

// settleSource ends the holds of one take. For each held meter i,
// KEYS[2i-1] is its counter and KEYS[2i] its holds; ARGV[1] is the store's
// clock in Unix milliseconds, ARGV[2] the take's ID; ARGV[3i] is the
// amount held, ARGV[3i+1] the amount used and ARGV[3i+2] the counter's
// expiry in Unix seconds. A hold still present is removed and its amount
// taken off "reserved" (an expired one was released already: never twice);
// then the used amount is added to "used", whatever the limit. It replies
// 0, or Redis's error for an increment past the int64 range (the other
// meters are settled all the same).
const settleSource = pruneLua + `
local now, id = ARGV[1], ARGV[2]
local err
for i = 1, #KEYS / 2 do
  local key, hkey, a = KEYS[2*i-1], KEYS[2*i], 3*i
  if redis.call('ZREM', hkey, id .. ':' .. ARGV[a]) == 1 then
    redis.call('HINCRBY', key, 'reserved', '-' .. ARGV[a])
  end
  prune(key, hkey, now)
  if ARGV[a+1] ~= '0' then
    local v = redis.pcall('HINCRBY', key, 'used', ARGV[a+1])
    if type(v) == 'table' then
      err = v
    end
  end
  extend(key, ARGV[a+2])
end
if err then
  return err
end
return 0
`

// refundSource undoes a take. KEYS are laid out as in takeSource; ARGV[1]
// is the record's lifetime in milliseconds, ARGV[2] the take's ID, then
// for meter i ARGV[2i+1] is its amount and ARGV[2i+2] is 1 for a hold, 0
// for the request meter. The record becomes a tombstone ('r', for the
// record's lifetime) whatever it was: a take that ran and was allowed
// ('a') gets its cost off "used" and its holds, if still held, released;
// one that was denied ('d') gets its amounts off "denied"; a take that has
// not run (no record) will find the tombstone and count nothing; a take
// refunded before ('r') changes nothing. Counters that no longer exist are
// left alone, so none is recreated without an expiry. It replies 1, 2 or
// 0 for the three cases.
const refundSource = `
local old = redis.call('SET', KEYS[1], 'r', 'PX', ARGV[1], 'GET')
local id = ARGV[2]
local n = (#KEYS - 1) / 2
if old == 'a' then
  for i = 1, n do
    local key, amt = KEYS[2*i], ARGV[2*i+1]
    if ARGV[2*i+2] == '1' then
      if redis.call('ZREM', KEYS[2*i+1], id .. ':' .. amt) == 1 then
        redis.call('HINCRBY', key, 'reserved', '-' .. amt)
      end
    elseif redis.call('EXISTS', key) == 1 then
      redis.call('HINCRBY', key, 'used', '-' .. amt)
    end
  end
  return 1
elseif old == 'd' then
  for i = 1, n do
    if redis.call('EXISTS', KEYS[2*i]) == 1 then
      redis.call('HINCRBY', KEYS[2*i], 'denied', '-' .. ARGV[2*i+1])
    end
  end
  return 2
end
return 0
`

// releaseExpiredLua is the part of leanTakeSource and comboTakeSource that
// releases the counter's expired holds when it holds any: key is the
// counter, KEYS[3] its holds, now the store's clock in Unix milliseconds,
// r the units held, which it lowers by those released (pruneLua's prune,
// inlined so that no function is defined per call).
const releaseExpiredLua = `if r > 0 then
  local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
  if #gone > 0 then
    for _, m in ipairs(gone) do
      local amt = string.match(m, ':(%d+)$')
      redis.call('HINCRBY', key, 'reserved', '-' .. amt)
      r = r - tonumber(amt)
    end
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  end
end
`

// leanTakeSource is the take of one meter without holds and without ID
// that a coalescing [RedisStore] on one server sends (see
// [LostTakeResolver]): no key per take, but a field in its batch's record.
// It is takeSource cut down to that case, with no function defined per
// call and as few arguments as it needs, since it runs for nearly every
// request.
//
// KEYS[1] is the batch's record (a hash with one field per decision of
// the batch: 'a' allowed, 'd' denied, 'x' counted nothing, 'r' resolved;
// or, for a decision sent alone, a string holding that state), KEYS[2] the
// counter and KEYS[3] its holds. ARGV[1] is the decision's field (0: sent
// alone), ARGV[2] the amount, ARGV[3] the limit (-1: no cap), ARGV[4] the
// counter's expiry in Unix seconds, ARGV[5] the store's clock in Unix
// milliseconds, and ARGV[6] the record's lifetime in milliseconds when
// this decision is alone or the first of its batch on the connection (it
// gives the record its lifetime), else 0.
//
// The record is written first, with HSETNX (SET NX PX when alone): a
// record already there (the decision was resolved before it ran) makes it
// count nothing and fail with BILLKIT_DUPLICATE. A decision alone thus
// runs the commands takeSource runs for one meter. A decision that is
// not the first of its send relies on an earlier call of the send for
// the record's lifetime: the first single call, and every comboTakeSource
// call, set it (and resolveSource sets it on a record without one). Then it decides exactly as takeSource does for
// one meter (releasing the meter's expired holds, if it holds any), and
// replies as takeSource does: one integer when the meter holds nothing
// for others, else the array.
const leanTakeSource = `
local rec, f, key = KEYS[1], ARGV[1], KEYS[2]
local alone = f == '0'
if alone then
  if not redis.call('SET', rec, 'a', 'NX', 'PX', ARGV[6]) then
    return {err = 'BILLKIT_DUPLICATE decision resolved before it ran'}
  end
elseif redis.call('HSETNX', rec, f, 'a') == 0 then
  return {err = 'BILLKIT_DUPLICATE decision resolved before it ran'}
elseif ARGV[6] ~= '0' then
  redis.call('PEXPIRE', rec, ARGV[6])
end
local function mark(state)
  if alone then
    redis.call('SET', rec, state, 'PX', ARGV[6])
  else
    redis.call('HSET', rec, f, state)
  end
end
local now = ARGV[5]
local v = redis.call('HMGET', key, 'used', 'reserved')
local u, r = tonumber(v[1] or '0'), tonumber(v[2] or '0')
` + releaseExpiredLua + `local exp = tonumber(ARGV[4])
local limit = tonumber(ARGV[3])
local n
if limit >= 0 and tonumber(ARGV[2]) > limit - u - r then
  redis.pcall('HINCRBY', key, 'denied', ARGV[2])
  mark('d')
else
  n = redis.pcall('HINCRBY', key, 'used', ARGV[2])
  if type(n) == 'table' then
    mark('x')
    return n
  end
end
if redis.call('EXPIRETIME', key) < exp then
  redis.call('EXPIREAT', key, exp)
end
if n then
  if r > 0 then
    return {0, n, r}
  end
  return n
end
if r > 0 then
  return {1, u, r}
end
return -1 - u
`

// comboTakeSource is leanTakeSource for several decisions on one counter
// sent together (one subject's concurrent requests), decided one after
// the other in their order, exactly as that many leanTakeSource calls
// would decide them, in one script call: the record's fields are read and
// written once, the counter read once and its expiry checked once.
//
// KEYS are leanTakeSource's. ARGV[1] is the store's clock in Unix
// milliseconds, ARGV[2] the record's lifetime in milliseconds when this
// call is the first of its batch on the connection, else 0; then for
// decision i, ARGV[4i-1] is its field, ARGV[4i] its amount, ARGV[4i+1]
// its limit (-1: no cap) and ARGV[4i+2] the counter's expiry in Unix
// seconds. It replies three values per decision: 0 (allowed), used and
// reserved after it; 1 (denied), used and reserved; 2 (resolved before it
// ran: it counted nothing), 0, 0; or 3 (its increment would leave the
// int64 range: it counted nothing), Redis's error message, 0.
const comboTakeSource = `
local rec, key = KEYS[1], KEYS[2]
local n = (#ARGV - 2) / 4
local fields = {}
for i = 1, n do
  fields[i] = ARGV[4*i-1]
end
local old = redis.call('HMGET', rec, unpack(fields))
local now = ARGV[1]
local v = redis.call('HMGET', key, 'used', 'reserved')
local u, r = tonumber(v[1] or '0'), tonumber(v[2] or '0')
` + releaseExpiredLua + `local out, rv, exp = {}, {}, 0
for i = 1, n do
  local a = 4*i - 1
  local f, amt, limit, e = ARGV[a], ARGV[a+1], tonumber(ARGV[a+2]), tonumber(ARGV[a+3])
  local o = 3*i - 2
  if old[i] then
    out[o], out[o+1], out[o+2] = 2, 0, 0
  else
    if e > exp then
      exp = e
    end
    if limit >= 0 and tonumber(amt) > limit - u - r then
      redis.pcall('HINCRBY', key, 'denied', amt)
      rv[#rv+1], rv[#rv+2] = f, 'd'
      out[o], out[o+1], out[o+2] = 1, u, r
    else
      local x = redis.pcall('HINCRBY', key, 'used', amt)
      if type(x) == 'table' then
        rv[#rv+1], rv[#rv+2] = f, 'x'
        out[o], out[o+1], out[o+2] = 3, x.err, 0
      else
        u = x
        rv[#rv+1], rv[#rv+2] = f, 'a'
        out[o], out[o+1], out[o+2] = 0, x, r
      end
    end
  end
end
if #rv > 0 then
  redis.call('HSET', rec, unpack(rv))
  if ARGV[2] ~= '0' then
    redis.call('PEXPIRE', rec, ARGV[2])
  end
  if redis.call('EXPIRETIME', key) < exp then
    redis.call('EXPIREAT', key, exp)
  end
end
return out
`

// resolveSource resolves a lost decision of leanTakeSource: KEYS[1] is
// its batch's record, KEYS[2] its counter; ARGV[1] its field (0: sent
// alone, its record a string), ARGV[2] the
// record's lifetime in milliseconds, ARGV[3] its amount. The field
// becomes 'r' whatever it was: a decision that was allowed gets its
// amount off "used", one that was denied off "denied", and one that has
// not run finds the field and counts nothing. A counter that no longer
// exists is left alone. It replies 1, 2 or 0 for the three cases (0 too
// for a decision that counted nothing or was resolved before).
const resolveSource = `
local old
if ARGV[1] == '0' then
  old = redis.call('SET', KEYS[1], 'r', 'PX', ARGV[2], 'GET')
else
  old = redis.call('HGET', KEYS[1], ARGV[1])
  redis.call('HSET', KEYS[1], ARGV[1], 'r')
  if redis.call('PTTL', KEYS[1]) < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
  end
end
if old ~= 'a' and old ~= 'd' then
  return 0
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  return old == 'a' and 1 or 2
end
if old == 'a' then
  redis.call('HINCRBY', KEYS[2], 'used', '-' .. ARGV[3])
  return 1
end
redis.call('HINCRBY', KEYS[2], 'denied', '-' .. ARGV[3])
return 2
`

// usageSource reads a counter: KEYS[1] the counter, KEYS[2] its holds,
// ARGV[1] the store's clock in Unix milliseconds. It replies used and
// denied as stored (strings, exact) and reserved less the expired holds
// that no script has released yet; it writes nothing.
const usageSource = `
local v = redis.call('HMGET', KEYS[1], 'used', 'denied', 'reserved')
local r = tonumber(v[3] or '0')
if r > 0 then
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])) do
    r = r - tonumber(string.match(m, ':(%d+)$'))
  end
end
return {v[1] or '0', v[2] or '0', r}
`

// script is a Lua script's source and SHA-1, boxed once so that building
// a call does not box them again.
type script struct{ src, sha any }

func newScript(src string) script { return script{src: src, sha: redis.NewScript(src).Hash()} }

var (
	takeScript   = newScript(takeSource)
	settleScript = newScript(settleSource)
	refundScript = newScript(refundSource)
	usageScript  = newScript(usageSource)
	leanScript   = newScript(leanTakeSource)
	comboScript  = newScript(comboTakeSource)
)

// noCap is the script's limit argument for an unlimited meter.
const noCap = -1

// duplicatePrefix starts the take script's error for a used or refunded ID.
const duplicatePrefix = "BILLKIT_DUPLICATE"

// decodeTake turns the take script's one-integer reply into a TakeResult.
func decodeTake(n int64) TakeResult {
	if n >= 0 {
		return TakeResult{Allowed: true, Used: n}
	}
	return TakeResult{Used: -1 - n}
}

// DefaultPrefix starts every Redis key when [RedisOptions.Prefix] is empty.
const DefaultPrefix = "billkit"

// DefaultRefundWindow is how long a store remembers a take for
// [Store.Refund] when its options leave it zero.
const DefaultRefundWindow = time.Minute

// RedisOptions configures a [RedisStore]. The zero value uses the defaults.
type RedisOptions struct {
	// Prefix starts every key. The default (the empty string) is
	// [DefaultPrefix]. It must not contain '{' or '}'.
	Prefix string
	// Now is the clock that dates holds: a hold expires at the store's
	// Now plus its TTL when it was taken, and a script releases it once
	// the Now it is given has passed that. Every process sharing a Redis
	// must agree on the time to well within [Config.ReservationTTL]. The
	// default is time.Now; tests give it the clock of [Config.Now].
	Now func() time.Time
	// RefundWindow is how long a take is remembered (a string key per
	// take with an ID, a field of its send's record for a take without;
	// expired by Redis itself) so that [Store.Refund], or the store
	// itself (see [RedisStore.ResolvesLostTakes]), can undo it, and how
	// long a refund's tombstone waits for a take that has not run yet. It must exceed the time between a take running and its
	// refund (the decision deadline plus the refund's own, about a
	// second with the middleware's defaults). The default is
	// [DefaultRefundWindow], one minute.
	RefundWindow time.Duration
	// NoCoalesce turns coalescing off: each decision is then its own
	// EVALSHA, sent at once. By default, decisions in flight at the same
	// time share round trips: while one is on the wire, the ones that
	// arrive queue and go together as one pipeline when it returns (no
	// timer: a lone decision is sent at once). See [RedisStore].
	NoCoalesce bool
	// MaxBatch bounds the decisions sent in one pipeline. The default
	// (zero) is [DefaultMaxBatch], 128.
	MaxBatch int
	// Logger receives the store's own errors: a lost decision it could
	// not resolve (see [LostTakeResolver]). The default is
	// slog.Default().
	Logger *slog.Logger
	// RecordPerTake keeps a record key per take, in its subject's hash
	// slot, on a standalone or Sentinel client too, instead of one record
	// shared by the decisions sent together (see
	// [RedisStore.ResolvesLostTakes]), whose key shares no slot with
	// their counters. A server that refuses a script's keys across slots
	// with CROSSSLOT (a proxy that shards by hash slot, such as Redis
	// Enterprise without the OSS Cluster API) makes the store switch by
	// itself, at its first shared record, to records of one subject; set
	// RecordPerTake for a proxy that refuses them otherwise, or to skip
	// that first attempt. The middleware then gives every take an ID and
	// refunds it itself. It costs redis-server about 4 µs more per
	// decision.
	RecordPerTake bool
	// Background, when set, receives every resolution of a lost take the
	// store sends by itself (see [RedisStore.ResolvesLostTakes]), one per
	// decision, with Op "resolve": the counterpart of the refunds the
	// middleware reports to [Observer.Background]. Pass the middleware's
	// Observer.Background to see both in one place. It is called from the
	// store's own goroutine and must not block.
	Background func(ctx context.Context, b BackgroundObservation)
}

func (o *RedisOptions) withDefaults() RedisOptions {
	out := *o
	if out.Prefix == "" {
		out.Prefix = DefaultPrefix
	}
	if out.Now == nil {
		out.Now = time.Now
	}
	if out.RefundWindow <= 0 {
		out.RefundWindow = DefaultRefundWindow
	}
	if out.MaxBatch <= 0 {
		out.MaxBatch = DefaultMaxBatch
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	return out
}

// RedisStore is a [Store] backed by Redis 7.0 or later: standalone,
// Sentinel or Cluster alike.
//
// Each counter is a hash at PREFIX:{SUBJECT}:usage:METER:PERIODID (such as
// billkit:{alice}:usage:requests:20261101; see the package documentation)
// with the fields "used" (billable units), "denied" (units of denied
// requests) and "reserved" (units held by unsettled reservations); a
// counter's holds are a sorted set at PREFIX:{SUBJECT}:holds:METER:PERIODID
// and a take's record a string at PREFIX:{SUBJECT}:take:ID (or, for a take
// without ID on one server, PREFIX:batch:RANDOM:SEQ, the record of the
// decisions sent with it, a hash with a field per decision, or
// PREFIX:{SUBJECT}:batch:RANDOM:SEQ when sent alone). Every method
// is one Lua script run with EVALSHA, so a decision, however many meters
// it checks, is atomic. The subject is the keys' hash tag, so all of a
// subject's keys share a Cluster slot.
//
// Decisions ([RedisStore.Take]) in flight at the same time share round
// trips, unless [RedisOptions.NoCoalesce] is set: a decision made while
// no other is on the wire is sent at once, alone, with its own context (a
// lone request waits for nothing; there is no timer); the decisions that
// arrive while one is on the wire queue, and go together as one pipeline
// (at most [RedisOptions.MaxBatch]) when it returns, and so on. One send
// is in flight at a time. On a Cluster the pipeline goes through the
// ClusterClient, which splits it by the node owning each key's slot and
// sends the parts to their nodes concurrently, so each node sees one
// pipeline per batch (a slow node delays the next batch for all).
// Each decision keeps its own deadline: one whose context ends while it
// is queued leaves the queue and is never sent (nothing is counted); one
// whose context ends after its batch was sent returns the context's error
// at once, an ambiguous outcome (the script may have counted it) that the
// store resolves by itself for a take without ID (see
// [RedisStore.ResolvesLostTakes]) and the middleware by refunding the
// take's ID otherwise. The pipeline's context
// has the latest deadline of its decisions. A pipeline answered NOSCRIPT
// (a restart, SCRIPT FLUSH) is sent again with EVAL for the decisions
// refused. Settle, Refund and Usage are not coalesced.
//
// A RedisStore is safe for concurrent use. The zero value is not usable;
// call [NewRedisStore].
type RedisStore struct {
	client redis.UniversalClient
	prefix string
	now    func() time.Time
	rttl   int64    // RefundWindow in milliseconds
	batch  *batcher // nil with NoCoalesce
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
	s := &RedisStore{client: client, prefix: o.Prefix, now: o.Now, rttl: max(o.RefundWindow.Milliseconds(), 1)}
	if !o.NoCoalesce {
		s.batch = &batcher{client: client, max: o.MaxBatch}
		// One server (standalone or Sentinel): a batch's decisions can
		// share one record.
		if _, ok := client.(*redis.Client); ok && !o.RecordPerTake {
			var rnd [8]byte
			if _, err := rand.Read(rnd[:]); err != nil {
				return nil, fmt.Errorf("quota: random record prefix: %w", err)
			}
			b := s.batch
			b.lean, b.rttl = true, s.rttl
			b.recPfx = o.Prefix + ":batch:" + hex.EncodeToString(rnd[:]) + ":"
			b.recRnd = ":batch:" + hex.EncodeToString(rnd[:]) + ":"
			b.log = o.Logger
			b.res = resolver{client: client, rttl: s.rttl, log: o.Logger, observe: o.Background}
		}
	}
	return s, nil
}

// key returns the Redis key of a counter, such as
// billkit:{alice}:usage:requests:20261101. It does not validate its
// arguments.
func (s *RedisStore) key(subject, meter string, period Period) string {
	var b strings.Builder
	s.appendKey(&b, subject, "}:usage:", meter, period)
	return b.String()
}

// appendKey appends PREFIX:{SUBJECT}KIND METER:PERIODID to b.
func (s *RedisStore) appendKey(b *strings.Builder, subject, kind, meter string, period Period) {
	b.WriteString(s.prefix)
	b.WriteString(":{")
	b.WriteString(subject)
	b.WriteString(kind)
	b.WriteString(meter)
	b.WriteByte(':')
	var id [16]byte
	b.Write(period.appendID(id[:0]))
}

// counterKeys returns a counter's key and its holds' key, as substrings
// of one string (one allocation).
func (s *RedisStore) counterKeys(subject, meter string, period Period) (counter, holds string) {
	var b strings.Builder
	b.Grow(2 * s.keyLen(subject, meter))
	s.appendKey(&b, subject, "}:usage:", meter, period)
	mid := b.Len()
	s.appendKey(&b, subject, "}:holds:", meter, period)
	all := b.String()
	return all[:mid], all[mid:]
}

// keyLen bounds the length of one key of subject and meter.
func (s *RedisStore) keyLen(subject, meter string) int {
	return len(s.prefix) + len(subject) + len(meter) + 30
}

// call holds the arguments of one script call. The command's argument
// slice points at strs and nums (go-redis writes *string and *int64 like
// string and int64), so nothing is boxed per argument; a take of up to two
// meters (and a settle of one) fits the inline arrays, so its call is one
// allocation (plus the one string holding its keys). A call is never
// reused: a go-redis hook may keep the command.
type call struct {
	args []any
	strs []string
	nums []int64

	argBuf [19]any
	strBuf [6]string
	numBuf [11]int64
}

// newCall returns a call with room for nstr strings and nnum integers.
func newCall(sc script, nkeys, nstr, nnum int) *call {
	c := &call{}
	c.init(sc, nkeys, nstr, nnum)
	return c
}

// init readies c, a zero call, with room for nstr strings and nnum
// integers.
func (c *call) init(sc script, nkeys, nstr, nnum int) {
	if nargs := 3 + nstr + nnum; nargs <= len(c.argBuf) && nstr <= len(c.strBuf) && nnum+1 <= len(c.numBuf) {
		c.args, c.strs, c.nums = c.argBuf[:0], c.strBuf[:0], c.numBuf[:0]
	} else {
		c.args, c.strs, c.nums = make([]any, 0, nargs), make([]string, 0, nstr), make([]int64, 0, nnum+1)
	}
	c.nums = append(c.nums, int64(nkeys))
	c.args = append(c.args, "evalsha", sc.sha, &c.nums[0])
}

// str appends a string argument. Arguments are appended in command order.
func (c *call) str(s string) {
	c.strs = append(c.strs, s)
	c.args = append(c.args, &c.strs[len(c.strs)-1])
}

func (c *call) num(n int64) {
	c.nums = append(c.nums, n)
	c.args = append(c.args, &c.nums[len(c.nums)-1])
}

// takeKeys returns the keys of a take: its record, then each meter's
// counter and holds, as substrings of one string.
func (s *RedisStore) takeKeys(req *TakeRequest, keys []string) []string {
	var b strings.Builder
	n := len(s.prefix) + len(req.Subject) + len(req.ID) + 12 + 2*s.keyLen(req.Subject, req.Meter)
	for i := range req.Reserve {
		n += 2 * s.keyLen(req.Subject, req.Reserve[i].Meter)
	}
	b.Grow(n)
	var endBuf [5]int
	ends := endBuf[:0]
	b.WriteString(s.prefix)
	b.WriteString(":{")
	b.WriteString(req.Subject)
	b.WriteString("}:take:")
	b.WriteString(req.ID)
	ends = append(ends, b.Len())
	for i := -1; i < len(req.Reserve); i++ {
		m, p := req.Meter, req.Period
		if i >= 0 {
			m, p = req.Reserve[i].Meter, req.Reserve[i].Period
		}
		s.appendKey(&b, req.Subject, "}:usage:", m, p)
		ends = append(ends, b.Len())
		s.appendKey(&b, req.Subject, "}:holds:", m, p)
		ends = append(ends, b.Len())
	}
	all := b.String()
	start := 0
	for _, end := range ends {
		keys = append(keys, all[start:end])
		start = end
	}
	return keys
}

// ResolvesLostTakes implements [LostTakeResolver]: it reports true when
// s coalesces decisions on one server (a *redis.Client: standalone or
// Sentinel) without [RedisOptions.RecordPerTake], where the decisions of
// one send share one record. A take
// without ID and without holds then writes a field of its send's record
// (a hash that lives [RedisOptions.RefundWindow]; a string of its own,
// in its subject's hash slot, when it is sent alone) instead of nothing;
// the takes of one counter in one send run as one script call, decided
// one after the other; and
// when its outcome is lost (its context ended after it was sent, or the
// connection broke), the store resolves it in the background through
// that field: an allowed or denied take is undone, one that has not run
// yet is marked so that it counts nothing. A resolution that fails is
// tried again for half the refund window, then logged to
// [RedisOptions.Logger].
func (s *RedisStore) ResolvesLostTakes() bool { return s.batch != nil && s.batch.lean }

// Wait waits until the lost decisions s is resolving in the background
// (see [RedisStore.ResolvesLostTakes]) are resolved or given up, or until
// ctx ends, whose error it then returns. Call it at shutdown, after
// [Middleware.Close] and before closing the Redis client. Decisions made
// while it waits may start resolutions of their own, which it waits for
// too.
func (s *RedisStore) Wait(ctx context.Context) error {
	if s.batch == nil {
		return nil
	}
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for s.batch.res.pending() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Take implements [Store]. It costs one round trip, shared with the
// decisions in flight at the same time (see [RedisStore]): EVALSHA, and
// EVAL instead once per server after a restart or SCRIPT FLUSH.
func (s *RedisStore) Take(ctx context.Context, req TakeRequest) (TakeResult, error) {
	if err := req.validate(); err != nil {
		return TakeResult{}, err
	}
	if req.ID == "" && len(req.Reserve) == 0 && s.ResolvesLostTakes() {
		return s.leanTake(ctx, &req)
	}
	n := 1 + len(req.Reserve)
	nkeys := 1 + 2*n
	c := newCall(takeScript, nkeys, nkeys+1, 2+4*n)
	var kb [5]string
	for _, k := range s.takeKeys(&req, kb[:0]) {
		c.str(k)
	}
	now := s.now()
	c.num(now.UnixMilli())
	if req.ID != "" {
		c.num(s.rttl)
	} else {
		c.num(0)
	}
	c.str(req.ID)
	meter := func(amount, limit int64, unlimited bool, expireAt time.Time, until int64) {
		if unlimited {
			limit = noCap
		}
		c.num(amount)
		c.num(limit)
		c.num(unixCeil(expireAt))
		c.num(until)
	}
	meter(req.Cost, req.Limit, req.Unlimited, req.ExpireAt, 0)
	for i := range req.Reserve {
		h := &req.Reserve[i]
		meter(h.Amount, h.Limit, h.Unlimited, h.ExpireAt, now.Add(h.TTL).UnixMilli())
	}
	var v any
	var err error
	if s.batch != nil {
		v, err = s.batch.run(&pending{ctx: ctx, sc: takeScript, args: c.args}, s.run)
	} else {
		v, err = s.run(ctx, takeScript, c.args)
	}
	return decodeTakeReply(&req, v, err)
}

// leanTake sends a take without ID and without holds as leanTakeSource,
// its record a field of its send's (see [RedisStore.ResolvesLostTakes]).
func (s *RedisStore) leanTake(ctx context.Context, req *TakeRequest) (TakeResult, error) {
	p := &pending{ctx: ctx, sc: leanScript, lean: true, amount: req.Cost}
	c := &p.call // one allocation for both
	c.init(leanScript, 3, 3, 6)
	counter, holds := s.counterKeys(req.Subject, req.Meter, req.Period)
	p.counter = counter
	c.str("") // the record, set when sent
	p.rec = &c.strs[0]
	c.str(counter)
	c.str(holds)
	c.num(0) // the field, set when sent
	p.field = &c.nums[len(c.nums)-1]
	c.num(req.Cost)
	if req.Unlimited {
		c.num(noCap)
	} else {
		c.num(req.Limit)
	}
	c.num(unixCeil(req.ExpireAt))
	c.num(s.now().UnixMilli())
	c.num(0) // the record's lifetime when first of its send, set when sent
	p.first = &c.nums[len(c.nums)-1]
	p.args = c.args
	v, err := s.batch.run(p, s.run)
	return decodeTakeReply(req, v, err)
}

// decodeTakeReply turns a take script's reply, or error, into Take's.
func decodeTakeReply(req *TakeRequest, v any, err error) (TakeResult, error) {
	if err != nil {
		if redis.HasErrorPrefix(err, duplicatePrefix) {
			return TakeResult{}, ErrDuplicateTake
		}
		return TakeResult{}, fmt.Errorf("quota: redis take: %w", err)
	}
	switch v := v.(type) {
	case int64:
		res := decodeTake(v)
		if !res.Allowed {
			res.Exhausted = req.Meter
		}
		return res, nil
	case []any:
		return decodeTakeArray(req, v)
	}
	return TakeResult{}, fmt.Errorf("quota: redis take: unexpected reply %T", v)
}

// decodeTakeArray turns the take script's array reply into a TakeResult.
func decodeTakeArray(req *TakeRequest, v []any) (TakeResult, error) {
	n := 1 + len(req.Reserve)
	if len(v) != 1+2*n {
		return TakeResult{}, fmt.Errorf("quota: redis take: reply of %d values for %d meters", len(v), n)
	}
	at := func(i int) (int64, error) {
		k, ok := v[i].(int64)
		if !ok {
			return 0, fmt.Errorf("quota: redis take: unexpected reply value %T", v[i])
		}
		return k, nil
	}
	var res TakeResult
	var ints [3]int64
	for i := range ints {
		k, err := at(i)
		if err != nil {
			return TakeResult{}, err
		}
		ints[i] = k
	}
	res.Allowed, res.Used, res.Reserved = ints[0] == 0, ints[1], ints[2]
	switch deny := ints[0]; {
	case deny == 1:
		res.Exhausted = req.Meter
	case deny > 1 && int(deny) <= n:
		res.Exhausted = req.Reserve[deny-2].Meter
	}
	if len(req.Reserve) > 0 {
		res.Holds = make([]HoldResult, len(req.Reserve))
		for i := range res.Holds {
			u, err := at(3 + 2*i)
			if err != nil {
				return TakeResult{}, err
			}
			r, err := at(4 + 2*i)
			if err != nil {
				return TakeResult{}, err
			}
			res.Holds[i] = HoldResult{Used: u, Reserved: r}
		}
	}
	return res, nil
}

// Settle implements [Store]. It costs one round trip.
func (s *RedisStore) Settle(ctx context.Context, req TakeRequest, used []int64) error {
	if err := validateSettle(&req, used); err != nil {
		return err
	}
	n := len(req.Reserve)
	c := newCall(settleScript, 2*n, 2*n+1, 1+3*n)
	var kb [5]string
	keys := s.takeKeys(&req, kb[:0])[3:] // without the record and the request meter
	for _, k := range keys {
		c.str(k)
	}
	c.num(s.now().UnixMilli())
	c.str(req.ID)
	for i := range req.Reserve {
		c.num(req.Reserve[i].Amount)
		c.num(used[i])
		c.num(unixCeil(req.Reserve[i].ExpireAt))
	}
	if _, err := s.run(ctx, settleScript, c.args); err != nil {
		return fmt.Errorf("quota: redis settle: %w", err)
	}
	return nil
}

// Refund implements [Store]. It costs one round trip.
func (s *RedisStore) Refund(ctx context.Context, req TakeRequest) error {
	if err := validateRefund(&req); err != nil {
		return err
	}
	n := 1 + len(req.Reserve)
	nkeys := 1 + 2*n
	c := newCall(refundScript, nkeys, nkeys+1, 1+2*n)
	var kb [5]string
	for _, k := range s.takeKeys(&req, kb[:0]) {
		c.str(k)
	}
	c.num(s.rttl)
	c.str(req.ID)
	c.num(req.Cost)
	c.num(0)
	for i := range req.Reserve {
		c.num(req.Reserve[i].Amount)
		c.num(1)
	}
	if _, err := s.run(ctx, refundScript, c.args); err != nil {
		return fmt.Errorf("quota: redis refund: %w", err)
	}
	return nil
}

// run sends one EVALSHA of sc, whose first key is args[3], and EVAL
// instead when the server does not have the script.
func (s *RedisStore) run(ctx context.Context, sc script, args []any) (any, error) {
	v, err := s.process(ctx, args)
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		v, err = s.process(ctx, evalArgs(sc, args))
	}
	return v, err
}

func (s *RedisStore) process(ctx context.Context, args []any) (any, error) {
	cmd := redis.NewCmd(ctx, args...)
	cmd.SetFirstKeyPos(3)
	_ = s.client.Process(ctx, cmd)
	return cmd.Result()
}

// Usage implements [Store] with one script that reads the counter and
// its expired holds (it writes nothing).
func (s *RedisStore) Usage(ctx context.Context, subject, meter string, period Period) (Usage, error) {
	if err := validateUsage(subject, meter); err != nil {
		return Usage{}, err
	}
	counter, holds := s.counterKeys(subject, meter, period)
	c := newCall(usageScript, 2, 2, 1)
	c.str(counter)
	c.str(holds)
	c.num(s.now().UnixMilli())
	v, err := s.run(ctx, usageScript, c.args)
	if err != nil {
		return Usage{}, fmt.Errorf("quota: redis usage: %w", err)
	}
	vals, ok := v.([]any)
	if !ok || len(vals) != 3 {
		return Usage{}, fmt.Errorf("quota: redis usage: unexpected reply %v", v)
	}
	var u Usage
	for i, dst := range []*int64{&u.Used, &u.Denied, &u.Reserved} {
		switch x := vals[i].(type) {
		case int64:
			*dst = x
		case string:
			n, err := strconv.ParseInt(x, 10, 64)
			if err != nil {
				return Usage{}, fmt.Errorf("quota: redis usage: field %d: %w", i, err)
			}
			*dst = n
		default:
			return Usage{}, fmt.Errorf("quota: redis usage: field %d: unexpected %T", i, x)
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
