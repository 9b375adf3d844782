package billing

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults of [RedisStoreConfig].
const (
	// DefaultPrefix is the default key prefix.
	DefaultPrefix = "billkit"
	// DefaultRetention is how long the Redis store keeps the entitlement of
	// a subject whose subscription ended: long enough to report the last
	// period's usage and to answer support questions.
	defaultRetention = 90 * 24 * time.Hour
)

// RedisStoreConfig configures a [RedisStore]. Every zero field means its
// documented default.
type RedisOptions struct {
	// Prefix starts every key. The default value is "billkit".
	Prefix string
	// Retention is how long an entitlement whose status is terminal
	// (canceled, incomplete_expired) is kept after its last write, and its
	// customer index entry with it. Live entitlements never expire. The
	// default value is [DefaultRetention] (90 days).
	Retention time.Duration
	// ScanCount is the COUNT hint of the SCAN that ForEach and
	// ForEachParked run. The default value is 500.
	ScanCount int64
	// MaxParked is the number of events the store parks for one customer
	// not linked to a subject yet (see [ParkingStore]); one more is
	// refused with ErrParkFull. The default value is 100.
	MaxParked int
	// Now stamps UpdatedAt. The default value is time.Now.
	Now func() time.Time
}

func (c RedisOptions) withDefaults() (RedisOptions, error) {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if strings.ContainsAny(c.Prefix, "{}*?[]\\") {
		return c, fmt.Errorf("%w: Prefix %q must not contain {}*?[]\\", ErrInvalidConfig, c.Prefix)
	}
	if c.Retention < 0 {
		return c, fmt.Errorf("%w: negative Retention", ErrInvalidConfig)
	}
	if c.Retention == 0 {
		c.Retention = defaultRetention
	}
	if c.ScanCount <= 0 {
		c.ScanCount = 500
	}
	if c.MaxParked <= 0 {
		c.MaxParked = 100
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}

// RedisStore is an [EntitlementStore] in Redis (standalone, Sentinel or
// Cluster). It is safe for concurrent use by any number of goroutines and
// processes. Its keys, with the default prefix:
//
//	billkit:{<subject>}:ent   hash: "data" (the entitlement as JSON) and
//	                          "rev" (a revision counter for compare-and-set).
//	                          No expiry while the status is live; when it is
//	                          canceled or incomplete_expired, expires
//	                          Retention after the last write.
//	billkit:cust:{<cus_id>}   string: the subject linked to the Stripe
//	                          customer. Same expiry as its entitlement.
//	billkit:park:{<cus_id>}   hash: event ID → the facts of an event whose
//	                          customer is linked to no subject yet (at most
//	                          MaxParked). Expires ParkFor plus 7 days after
//	                          the last event parked; the lifecycle removes
//	                          each event once applied or dropped.
//
// Update is an optimistic compare-and-set: it reads data and rev, runs fn,
// and writes with a Lua script on the single entitlement key that succeeds
// only when rev is unchanged, else it reads again. ForEach SCANs every
// master for the entitlement key pattern (never KEYS).
type RedisStore struct {
	rdb redis.UniversalClient
	cfg RedisOptions
}

var (
	_ EntitlementStore = (*RedisStore)(nil)
	_ parkingStore     = (*RedisStore)(nil)
)

// NewRedisStore returns a store on rdb.
func NewRedisStore(rdb redis.UniversalClient, cfg RedisOptions) (*RedisStore, error) {
	if rdb == nil {
		return nil, fmt.Errorf("%w: nil Redis client", ErrInvalidConfig)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &RedisStore{rdb: rdb, cfg: cfg}, nil
}

// key returns the key of subject's entitlement.
func (s *RedisStore) key(subject string) string {
	return s.cfg.Prefix + ":{" + subject + "}:ent"
}

// customerKey returns the key of the customer index entry of customerID.
func (s *RedisStore) customerKey(customerID string) string {
	return s.cfg.Prefix + ":cust:{" + customerID + "}"
}

// casScript stores ARGV[2] as the entitlement when the stored revision is
// ARGV[1] ("0" when there is none), bumps the revision and sets the expiry:
// ARGV[3] milliseconds, or none when it is 0. It returns the new revision,
// or -1 when the revision changed.
var casScript = redis.NewScript(`
local rev = redis.call('HGET', KEYS[1], 'rev')
if not rev then rev = '0' end
if rev ~= ARGV[1] then return -1 end
local n = tonumber(rev) + 1
redis.call('HSET', KEYS[1], 'data', ARGV[2], 'rev', n)
if tonumber(ARGV[3]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
else
  redis.call('PERSIST', KEYS[1])
end
return n
`)

// Get returns subject's entitlement, or ErrNotFound.
func (s *RedisStore) Get(ctx context.Context, subject string) (Entitlement, error) {
	if err := checkSubject(subject); err != nil {
		return Entitlement{}, err
	}
	b, err := s.rdb.HGet(ctx, s.key(subject), "data").Bytes()
	if errors.Is(err, redis.Nil) {
		return Entitlement{}, ErrNotFound
	}
	if err != nil {
		return Entitlement{}, fmt.Errorf("billing: get entitlement: %w", err)
	}
	return decodeEntitlement(b)
}

// Update implements [EntitlementStore.Update] with an optimistic
// compare-and-set; fn may run more than once.
func (s *RedisStore) Update(ctx context.Context, subject string, fn func(*Entitlement) error) (Entitlement, bool, error) {
	if err := checkSubject(subject); err != nil {
		return Entitlement{}, false, err
	}
	key := s.key(subject)
	for attempt := 0; attempt < maxUpdateAttempts; attempt++ {
		vals, err := s.rdb.HMGet(ctx, key, "data", "rev").Result()
		if err != nil {
			return Entitlement{}, false, fmt.Errorf("billing: read entitlement: %w", err)
		}
		var cur Entitlement
		found := false
		rev := "0"
		if data, ok := vals[0].(string); ok {
			if cur, err = decodeEntitlement([]byte(data)); err != nil {
				return Entitlement{}, false, err
			}
			found = true
		}
		if r, ok := vals[1].(string); ok {
			rev = r
		}
		next, changed, err := applyUpdate(subject, cur, found, s.cfg.Now(), fn)
		if err != nil || !changed {
			return next, false, err
		}
		data, err := encodeEntitlement(next)
		if err != nil {
			return Entitlement{}, false, err
		}
		var ttl int64
		if next.Status.Terminal() {
			ttl = s.cfg.Retention.Milliseconds()
		}
		n, err := casScript.Run(ctx, s.rdb, []string{key}, rev, data, strconv.FormatInt(ttl, 10)).Int64()
		if err != nil {
			return Entitlement{}, false, fmt.Errorf("billing: write entitlement: %w", err)
		}
		if n < 0 {
			continue // changed under us: read again
		}
		if next.CustomerID != "" && (next.CustomerID != cur.CustomerID || next.Status.Terminal() != cur.Status.Terminal() || !found) {
			// The index entry has its own hash tag, so it is written
			// after the entitlement; a crash in between leaves it to the
			// next event or Reconcile, and subscription metadata maps
			// events without it.
			ck := s.customerKey(next.CustomerID)
			var err error
			if ttl > 0 {
				err = s.rdb.Set(ctx, ck, subject, time.Duration(ttl)*time.Millisecond).Err()
			} else {
				err = s.rdb.Set(ctx, ck, subject, 0).Err()
			}
			if err != nil {
				return next, true, fmt.Errorf("billing: index customer: %w", err)
			}
		}
		return next, true, nil
	}
	return Entitlement{}, false, ErrConflict
}

// SubjectByCustomer returns the subject linked to customerID, or ErrNotFound.
func (s *RedisStore) SubjectByCustomer(ctx context.Context, customerID string) (string, error) {
	sub, err := s.rdb.Get(ctx, s.customerKey(customerID)).Result()
	if errors.Is(err, redis.Nil) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("billing: customer index: %w", err)
	}
	return sub, nil
}

// ForEach SCANs every master (on Cluster, each one through ForEachMaster)
// for entitlement keys and calls fn for each entitlement found, one at a
// time. As with SCAN, an entitlement written during the walk may or may
// not be seen, and one may be seen twice if the cluster reshards.
func (s *RedisStore) ForEach(ctx context.Context, fn func(Entitlement) error) error {
	return s.scanKeys(ctx, s.cfg.Prefix+":{*}:ent", func(node redis.UniversalClient, keys []string) error {
		cmds := make([]*redis.StringCmd, len(keys))
		_, err := node.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range keys {
				cmds[i] = p.HGet(ctx, k, "data")
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) && !isWrongType(err) {
			return fmt.Errorf("billing: read entitlements: %w", err)
		}
		for _, c := range cmds {
			b, err := c.Bytes()
			if err != nil {
				continue // expired or deleted since SCAN, or not ours
			}
			e, err := decodeEntitlement(b)
			if err != nil {
				return err
			}
			if err := fn(e); err != nil {
				return err
			}
		}
		return nil
	})
}

// scanKeys SCANs every master for pattern and calls fn with each batch of
// keys found and the node that holds them, one batch at a time, stopping
// at fn's first error.
func (s *RedisStore) scanKeys(ctx context.Context, pattern string, fn func(node redis.UniversalClient, keys []string) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu    sync.Mutex // serializes fn
		fnErr error
	)
	scan := func(ctx context.Context, node redis.UniversalClient) error {
		var cursor uint64
		for {
			keys, next, err := node.Scan(ctx, cursor, pattern, s.cfg.ScanCount).Result()
			if err != nil {
				return fmt.Errorf("billing: scan keys: %w", err)
			}
			if len(keys) > 0 {
				mu.Lock()
				if fnErr == nil {
					fnErr = fn(node, keys)
				}
				stop := fnErr != nil
				mu.Unlock()
				if stop {
					cancel()
					return nil
				}
			}
			cursor = next
			if cursor == 0 {
				return nil
			}
		}
	}
	var err error
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
	} else {
		err = scan(ctx, s.rdb)
	}
	if fnErr != nil {
		return fnErr
	}
	return err
}

func isWrongType(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "WRONGTYPE")
}

// parkKey returns the key of the events parked for customerID.
func (s *RedisStore) parkKey(customerID string) string {
	return s.cfg.Prefix + ":park:{" + customerID + "}"
}

// parkScript stores ARGV[2] in field ARGV[1] of the park hash unless the
// hash already holds ARGV[4] other events, and makes the hash live at least
// ARGV[3] milliseconds. It returns 0 when the hash is full.
var parkScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local ttl = tonumber(ARGV[3])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
`)

// Park implements [ParkingStore.Park]: the events of a customer are one
// hash, at most MaxParked of them, whose expiry each Park extends to at
// least ttl.
func (s *RedisStore) park(ctx context.Context, customerID, eventID string, data []byte, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("%w: park ttl must be positive", ErrInvalidConfig)
	}
	ms := (ttl + time.Millisecond - 1).Milliseconds() // never 0, which would delete the hash
	ok, err := parkScript.Run(ctx, s.rdb, []string{s.parkKey(customerID)}, eventID, data,
		ms, s.cfg.MaxParked).Int()
	if err != nil {
		return fmt.Errorf("billing: park event: %w", err)
	}
	if ok == 0 {
		return fmt.Errorf("%w: %d events of one customer", errParkFull, s.cfg.MaxParked)
	}
	return nil
}

// Parked implements [ParkingStore.Parked].
func (s *RedisStore) parked(ctx context.Context, customerID string) (map[string][]byte, error) {
	m, err := s.rdb.HGetAll(ctx, s.parkKey(customerID)).Result()
	if err != nil {
		return nil, fmt.Errorf("billing: read parked events: %w", err)
	}
	out := make(map[string][]byte, len(m))
	for id, v := range m {
		out[id] = []byte(v)
	}
	return out, nil
}

// Unpark implements [ParkingStore.Unpark].
func (s *RedisStore) unpark(ctx context.Context, customerID string, eventIDs ...string) error {
	if len(eventIDs) == 0 {
		return nil
	}
	if err := s.rdb.HDel(ctx, s.parkKey(customerID), eventIDs...).Err(); err != nil {
		return fmt.Errorf("billing: remove parked events: %w", err)
	}
	return nil
}

// ForEachParked implements [ParkingStore.ForEachParked]: it SCANs every
// master for park keys, as ForEach does for entitlements.
func (s *RedisStore) forEachParked(ctx context.Context, fn func(customerID string) error) error {
	prefix := s.cfg.Prefix + ":park:{"
	return s.scanKeys(ctx, prefix+"*}", func(_ redis.UniversalClient, keys []string) error {
		for _, k := range keys {
			if !strings.HasPrefix(k, prefix) || !strings.HasSuffix(k, "}") {
				continue
			}
			if err := fn(k[len(prefix) : len(k)-1]); err != nil {
				return err
			}
		}
		return nil
	})
}
