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
	DefaultRetention = 90 * 24 * time.Hour
)

// RedisStoreConfig configures a [RedisStore]. Every zero field means its
// documented default.
type RedisStoreConfig struct {
	// Prefix starts every key. The default value is "billkit".
	Prefix string
	// Retention is how long an entitlement whose status is terminal
	// (canceled, incomplete_expired) is kept after its last write, and its
	// customer index entry with it. Live entitlements never expire. The
	// default value is [DefaultRetention] (90 days).
	Retention time.Duration
	// ScanCount is the COUNT hint of the SCAN that ForEach runs. The
	// default value is 500.
	ScanCount int64
	// Now stamps UpdatedAt. The default value is time.Now.
	Now func() time.Time
}

func (c RedisStoreConfig) withDefaults() (RedisStoreConfig, error) {
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
		c.Retention = DefaultRetention
	}
	if c.ScanCount <= 0 {
		c.ScanCount = 500
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
//
// Update is an optimistic compare-and-set: it reads data and rev, runs fn,
// and writes with a Lua script on the single entitlement key that succeeds
// only when rev is unchanged, else it reads again. ForEach SCANs every
// master for the entitlement key pattern (never KEYS).
type RedisStore struct {
	rdb redis.UniversalClient
	cfg RedisStoreConfig
}

var _ EntitlementStore = (*RedisStore)(nil)

// NewRedisStore returns a store on rdb.
func NewRedisStore(rdb redis.UniversalClient, cfg RedisStoreConfig) (*RedisStore, error) {
	if rdb == nil {
		return nil, fmt.Errorf("%w: nil Redis client", ErrInvalidConfig)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &RedisStore{rdb: rdb, cfg: cfg}, nil
}

// Key returns the key of subject's entitlement.
func (s *RedisStore) Key(subject string) string {
	return s.cfg.Prefix + ":{" + subject + "}:ent"
}

// CustomerKey returns the key of the customer index entry of customerID.
func (s *RedisStore) CustomerKey(customerID string) string {
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
	b, err := s.rdb.HGet(ctx, s.Key(subject), "data").Bytes()
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
func (s *RedisStore) Update(ctx context.Context, subject string, fn func(*Entitlement) error) (Entitlement, error) {
	key := s.Key(subject)
	for attempt := 0; attempt < maxUpdateAttempts; attempt++ {
		vals, err := s.rdb.HMGet(ctx, key, "data", "rev").Result()
		if err != nil {
			return Entitlement{}, fmt.Errorf("billing: read entitlement: %w", err)
		}
		var cur Entitlement
		found := false
		rev := "0"
		if data, ok := vals[0].(string); ok {
			if cur, err = decodeEntitlement([]byte(data)); err != nil {
				return Entitlement{}, err
			}
			found = true
		}
		if r, ok := vals[1].(string); ok {
			rev = r
		}
		next, changed, err := applyUpdate(subject, cur, found, s.cfg.Now(), fn)
		if err != nil || !changed {
			return next, err
		}
		data, err := encodeEntitlement(next)
		if err != nil {
			return Entitlement{}, err
		}
		var ttl int64
		if next.Status.Terminal() {
			ttl = s.cfg.Retention.Milliseconds()
		}
		n, err := casScript.Run(ctx, s.rdb, []string{key}, rev, data, strconv.FormatInt(ttl, 10)).Int64()
		if err != nil {
			return Entitlement{}, fmt.Errorf("billing: write entitlement: %w", err)
		}
		if n < 0 {
			continue // changed under us: read again
		}
		if next.CustomerID != "" && (next.CustomerID != cur.CustomerID || next.Status.Terminal() != cur.Status.Terminal() || !found) {
			// The index entry has its own hash tag, so it is written
			// after the entitlement; a crash in between leaves it to the
			// next event or Reconcile, and subscription metadata maps
			// events without it.
			ck := s.CustomerKey(next.CustomerID)
			var err error
			if ttl > 0 {
				err = s.rdb.Set(ctx, ck, subject, time.Duration(ttl)*time.Millisecond).Err()
			} else {
				err = s.rdb.Set(ctx, ck, subject, 0).Err()
			}
			if err != nil {
				return next, fmt.Errorf("billing: index customer: %w", err)
			}
		}
		return next, nil
	}
	return Entitlement{}, ErrConflict
}

// SubjectByCustomer returns the subject linked to customerID, or ErrNotFound.
func (s *RedisStore) SubjectByCustomer(ctx context.Context, customerID string) (string, error) {
	sub, err := s.rdb.Get(ctx, s.CustomerKey(customerID)).Result()
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
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu    sync.Mutex // serializes fn
		fnErr error
	)
	scan := func(ctx context.Context, node redis.UniversalClient) error {
		var cursor uint64
		pattern := s.cfg.Prefix + ":{*}:ent"
		for {
			keys, next, err := node.Scan(ctx, cursor, pattern, s.cfg.ScanCount).Result()
			if err != nil {
				return fmt.Errorf("billing: scan entitlements: %w", err)
			}
			if len(keys) > 0 {
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
					mu.Lock()
					if fnErr == nil {
						fnErr = fn(e)
					}
					stop := fnErr != nil
					mu.Unlock()
					if stop {
						cancel()
						return nil
					}
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
