package webhook_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stripe/stripe-go/v76"

	"github.com/billkit/billkit/webhook"
	"github.com/billkit/billkit/webhook/webhooktest"
)

func TestMemoryStoreConformance(t *testing.T) {
	t.Parallel()
	webhooktest.TestStore(t, func(t *testing.T) webhooktest.StoreUnderTest {
		clock := newFakeClock()
		return webhooktest.StoreUnderTest{Store: webhook.NewMemoryStore(webhook.MemoryOptions{Now: clock.Now}), Advance: clock.Add}
	})
}

func TestRedisStoreConformanceMiniredis(t *testing.T) {
	t.Parallel()
	webhooktest.TestStore(t, func(t *testing.T) webhooktest.StoreUnderTest {
		mr := miniredis.RunT(t)
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		t.Cleanup(func() { rdb.Close() })
		return webhooktest.StoreUnderTest{Store: newRedisStore(t, rdb, ""), Advance: mr.FastForward}
	})
}

// The real-server suites let time pass with a redisClock: each subtest's
// store has its own prefix, and Advance moves that prefix's expiries.

func TestRedisStoreConformanceRealRedis(t *testing.T) {
	t.Parallel()
	rdb := realRedis(t)
	webhooktest.TestStore(t, func(t *testing.T) webhooktest.StoreUnderTest {
		prefix := uniquePrefix()
		return webhooktest.StoreUnderTest{Store: newRedisStore(t, rdb, prefix), Advance: redisClock{t, rdb, prefix}.Advance}
	})
	checkAllKeysExpire(t, rdb, "*:wh:*")
}

func TestRedisStoreConformanceCluster(t *testing.T) {
	t.Parallel()
	rdb := realCluster(t)
	webhooktest.TestStore(t, func(t *testing.T) webhooktest.StoreUnderTest {
		prefix := uniquePrefix()
		return webhooktest.StoreUnderTest{Store: newRedisStore(t, rdb, prefix), Advance: redisClock{t, rdb, prefix}.Advance}
	})
	// The same flow through the Handler on the Cluster: keys land on
	// several masters, each with an expiry.
	store := newRedisStore(t, rdb, "")
	var c counter
	h := newHandler(t, webhook.Config{Store: store})
	h.OnAny(c.handle)
	for i := range 20 {
		id := fmt.Sprintf("evt_cluster_%d", i)
		if got := webhooktest.Deliver(t, h, secret, invoice(id), invoice(id)); got[0] != 200 || got[1] != 200 {
			t.Fatalf("%s: statuses %v, want [200 200]", id, got)
		}
		if n := c.count(id); n != 1 {
			t.Fatalf("%s ran %d times on the Cluster, want 1", id, n)
		}
	}
	checkAllKeysExpire(t, rdb, "*:wh:*")
}

// checkAllKeysExpire asserts (W4) that every key matching pattern has an
// expiry, on every master.
func checkAllKeysExpire(t *testing.T, rdb redis.UniversalClient, pattern string) {
	t.Helper()
	ctx := context.Background()
	check := func(ctx context.Context, c *redis.Client) error {
		iter := c.Scan(ctx, 0, pattern, 0).Iterator()
		for iter.Next(ctx) {
			ttl, err := c.PTTL(ctx, iter.Val()).Result()
			if err != nil {
				return err
			}
			if ttl == -1 { // go-redis reports PTTL -1 (no expiry) as -1ns
				return fmt.Errorf("key %s has no expiry (PTTL %v)", iter.Val(), ttl)
			}
		}
		return iter.Err()
	}
	var err error
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, check)
	case *redis.Client:
		err = check(ctx, c)
	default:
		t.Fatalf("unsupported client %T", rdb)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestRedisStoreKeysExpire checks W4 on a real redis-server: the lease key
// expires after the lease, the done key after the retention, and no key is
// left without an expiry after handled, failed and duplicate deliveries.
func TestRedisStoreKeysExpire(t *testing.T) {
	t.Parallel()
	rdb := realRedis(t)
	ctx := context.Background()
	store := newRedisStore(t, rdb, "acme")

	c, err := store.Claim(ctx, "evt_ttl", 30*time.Second)
	if err != nil || c.Status != webhook.Claimed {
		t.Fatalf("Claim = %+v, %v", c, err)
	}
	key := "acme:wh:{evt_ttl}"
	if got := store.Key("evt_ttl"); got != key {
		t.Fatalf("Key = %q, want %q", got, key)
	}
	if ttl := rdb.PTTL(ctx, key).Val(); ttl <= 29*time.Second || ttl > 30*time.Second {
		t.Fatalf("lease PTTL = %v, want about 30s", ttl)
	}
	if err := store.Complete(ctx, "evt_ttl", c.Token, webhook.DefaultRetention); err != nil {
		t.Fatal(err)
	}
	if ttl := rdb.PTTL(ctx, key).Val(); ttl <= webhook.DefaultRetention-time.Minute || ttl > webhook.DefaultRetention {
		t.Fatalf("done PTTL = %v, want about %v", ttl, webhook.DefaultRetention)
	}

	// Through the handler: handled, duplicate, failing and ignored events.
	fail := true
	h := newHandler(t, webhook.Config{Store: store})
	h.On("invoice.paid", func(context.Context, *stripe.Event) error { return nil })
	h.On("invoice.payment_failed", func(context.Context, *stripe.Event) error {
		if fail {
			return errors.New("boom")
		}
		return nil
	})
	for i := range 10 {
		webhooktest.Deliver(t, h, secret, invoice(fmt.Sprintf("evt_h%d", i)), invoice(fmt.Sprintf("evt_h%d", i)))
	}
	failing := webhooktest.NewEvent("invoice.payment_failed", map[string]any{"id": "in_1", "object": "invoice"}, webhooktest.WithID("evt_fail"))
	if got := webhooktest.Deliver(t, h, secret, failing); got[0] != 500 {
		t.Fatalf("failing delivery = %v, want 500", got)
	}
	if n := rdb.Exists(ctx, "acme:wh:{evt_fail}").Val(); n != 0 {
		t.Fatalf("a failed event left its key behind (released claims are deleted)")
	}
	checkAllKeysExpire(t, rdb, "*")
	if n := rdb.DBSize(ctx).Val(); n != 11 {
		t.Fatalf("DBSIZE = %d, want 11 (evt_ttl and ten handled events)", n)
	}
}

func TestNewRedisStoreValidates(t *testing.T) {
	t.Parallel()
	if _, err := webhook.NewRedisStore(nil, webhook.RedisOptions{}); !errors.Is(err, webhook.ErrInvalidConfig) {
		t.Errorf("nil client: err = %v, want ErrInvalidConfig", err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	for _, prefix := range []string{"a{b}", "a}", "{"} {
		if _, err := webhook.NewRedisStore(rdb, webhook.RedisOptions{Prefix: prefix}); !errors.Is(err, webhook.ErrInvalidConfig) || !strings.Contains(err.Error(), "Prefix") {
			t.Errorf("prefix %q: err = %v, want ErrInvalidConfig naming Prefix", prefix, err)
		}
	}
	s, err := webhook.NewRedisStore(rdb, webhook.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.Key("evt_123"), "billkit:wh:{evt_123}"; got != want {
		t.Errorf("default key = %q, want %q", got, want)
	}
	ctx := context.Background()
	if _, err := s.Claim(ctx, "", time.Second); !errors.Is(err, webhook.ErrInvalidArgument) {
		t.Errorf("empty id: err = %v", err)
	}
	if err := s.Complete(ctx, "evt", "tok", 0); !errors.Is(err, webhook.ErrInvalidArgument) {
		t.Errorf("zero retention: err = %v", err)
	}
}

// TestRedisStoreUnavailable checks that a store failure is an error, not a
// claim result.
func TestRedisStoreUnavailable(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	defer rdb.Close()
	s := newRedisStore(t, rdb, "")
	mr.Close()
	if c, err := s.Claim(context.Background(), "evt_down", time.Second); err == nil {
		t.Fatalf("Claim on a closed server = %+v, want an error", c)
	}
}

// TestMemoryStoreBounded checks W4 for the memory store: expired leases and
// done records are removed as the store is used.
func TestMemoryStoreBounded(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := webhook.NewMemoryStore(webhook.MemoryOptions{Now: clock.Now})
	ctx := context.Background()
	for i := range 1000 {
		id := fmt.Sprintf("evt_%d", i)
		c, err := s.Claim(ctx, id, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if err := s.Complete(ctx, id, c.Token, webhook.MinRetention); err != nil {
				t.Fatal(err)
			}
		}
		// Odd events are abandoned: their lease expires.
	}
	if n := s.Len(); n != 1000 {
		t.Fatalf("Len = %d, want 1000", n)
	}
	clock.Add(2 * time.Minute)
	if n := s.Len(); n != 500 {
		t.Fatalf("after the leases: Len = %d, want 500 done records", n)
	}
	clock.Add(webhook.MinRetention)
	// New claims on a store whose records all expired.
	for i := range 2000 {
		if _, err := s.Claim(ctx, fmt.Sprintf("evt_new_%d", i), time.Second); err != nil {
			t.Fatal(err)
		}
		clock.Add(time.Second)
	}
	if n := s.Len(); n > 1 {
		t.Fatalf("after every record expired: Len = %d, want at most 1", n)
	}
}
