package usage

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/billkit/billkit/quota"
	"github.com/redis/go-redis/v9"
)

// redisOptions configures the usage reporter's Redis stores
// ([redisWatermarks], [redisLeases]). The zero value uses the
// default prefix.
type redisOptions struct {
	// Prefix starts every key. The default value is "billkit".
	Prefix string
}

func (o redisOptions) prefix() string {
	if o.Prefix == "" {
		return "billkit"
	}
	return o.Prefix
}

// redisWatermarks is a [watermarkStore] in Redis: one hash per subject,
// meter and period at prefix:{subject}:wm:{meter}:{periodID}, with fields
// r (units reported), f, t, id, ts (the in-flight report) and fin (final).
// Every write sets the key's expiry, in the same script; each script
// touches one key, so it runs on Redis Cluster.
//
// A redisWatermarks is safe for concurrent use. Its zero value is not
// usable; create one with [newRedisWatermarks].
type redisWatermarks struct {
	rdb    redis.UniversalClient
	prefix string
}

// newRedisWatermarks returns a store on rdb (standalone, Sentinel or
// Cluster).
func newRedisWatermarks(rdb redis.UniversalClient, opts redisOptions) *redisWatermarks {
	return &redisWatermarks{rdb: rdb, prefix: opts.prefix()}
}

// key returns the Redis key of k's watermark.
func (s *redisWatermarks) key(k wmKey) string {
	return s.prefix + ":{" + k.Subject + "}:wm:" + k.Meter + ":" + k.Period.ID()
}

// Load implements [watermarkStore] with one pipelined round trip (the
// keys share the subject's hash slot).
func (s *redisWatermarks) Load(ctx context.Context, subject, meter string, periods []quota.Period) ([]watermark, error) {
	cmds := make([]*redis.MapStringStringCmd, len(periods))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, per := range periods {
			cmds[i] = p.HGetAll(ctx, s.key(wmKey{Subject: subject, Meter: meter, Period: per}))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("billing: load watermark: %w", err)
	}
	out := make([]watermark, len(periods))
	for i, c := range cmds {
		w, err := parseWatermark(c.Val())
		if err != nil {
			return nil, err
		}
		out[i] = w
	}
	return out, nil
}

func parseWatermark(m map[string]string) (watermark, error) {
	var w watermark
	if len(m) == 0 {
		return w, nil
	}
	num := func(f string) (int64, error) {
		v, ok := m[f]
		if !ok {
			return 0, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("billing: corrupt watermark field %s", f)
		}
		return n, nil
	}
	var err error
	if w.Reported, err = num("r"); err != nil {
		return w, err
	}
	w.Final = m["fin"] == "1"
	if id := m["id"]; id != "" {
		f := &inFlight{Identifier: id}
		if f.From, err = num("f"); err != nil {
			return w, err
		}
		if f.To, err = num("t"); err != nil {
			return w, err
		}
		ts, err := num("ts")
		if err != nil {
			return w, err
		}
		f.Timestamp = time.Unix(ts, 0).UTC()
		w.inFlight = f
	}
	return w, nil
}

// beginScript writes the in-flight report when none is pending and the
// reported count equals its start.
//
// KEYS[1] watermark; ARGV: from, to, identifier, timestamp, expireAt (ms).
var beginScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], 'id') == 1 then return 0 end
local r = tonumber(redis.call('HGET', KEYS[1], 'r') or '0')
if r ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'f', ARGV[1], 't', ARGV[2], 'id', ARGV[3], 'ts', ARGV[4])
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
return 1
`)

// commitScript records an acknowledgement.
//
// KEYS[1] watermark; ARGV: identifier ("" for totals), to, final (0/1),
// expireAt (ms).
var commitScript = redis.NewScript(`
local id = redis.call('HGET', KEYS[1], 'id')
if ARGV[1] ~= '' then
  if id ~= ARGV[1] then return 0 end
  redis.call('HDEL', KEYS[1], 'f', 't', 'id', 'ts')
elseif id then
  return 0
end
local r = tonumber(redis.call('HGET', KEYS[1], 'r') or '0')
if tonumber(ARGV[2]) > r then redis.call('HSET', KEYS[1], 'r', ARGV[2]) end
if ARGV[3] == '1' then redis.call('HSET', KEYS[1], 'fin', '1') end
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('HSET', KEYS[1], 'r', '0') end
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return 1
`)

// Begin implements [watermarkStore].
func (s *redisWatermarks) Begin(ctx context.Context, k wmKey, f inFlight, expireAt time.Time) (bool, error) {
	n, err := beginScript.Run(ctx, s.rdb, []string{s.key(k)},
		f.From, f.To, f.Identifier, f.Timestamp.Unix(), expireAt.UnixMilli()).Int()
	if err != nil {
		return false, fmt.Errorf("billing: begin watermark: %w", err)
	}
	return n == 1, nil
}

// Commit implements [watermarkStore].
func (s *redisWatermarks) Commit(ctx context.Context, k wmKey, c wmCommit, expireAt time.Time) (bool, error) {
	fin := 0
	if c.Final {
		fin = 1
	}
	n, err := commitScript.Run(ctx, s.rdb, []string{s.key(k)},
		c.Identifier, c.To, fin, expireAt.UnixMilli()).Int()
	if err != nil {
		return false, fmt.Errorf("billing: commit watermark: %w", err)
	}
	return n == 1, nil
}
