package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stripe/stripe-go/v76"

	"github.com/billkit/billkit/internal/fakeclock"
	"github.com/billkit/billkit/internal/testserver"
	"github.com/billkit/billkit/webhook"
	"github.com/billkit/billkit/webhook/webhooktest"
)

const (
	secret    = "whsec_test_primary_3f9a1c"
	oldSecret = "whsec_test_rotated_out_77b2"
)

// fakeClock is a clock tests advance by hand.
type fakeClock = fakeclock.Clock

func newFakeClock() *fakeClock {
	return fakeclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
}

// safeBuffer is a concurrency-safe log sink.
type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *safeBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *safeBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// counter counts handler calls per event ID.
type counter struct {
	mu    sync.Mutex
	calls map[string]int
	total int
}

func (c *counter) handle(_ context.Context, ev *stripe.Event) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.calls == nil {
		c.calls = make(map[string]int)
	}
	c.calls[ev.ID]++
	c.total++
	return nil
}

func (c *counter) count(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[id]
}

func (c *counter) all() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// quiet discards log records; tests that read the logs set their own.
var quiet = slog.New(slog.DiscardHandler)

// newHandler returns a Handler with cfg's fields, the test secret, a fresh
// memory store on cfg.Now and a discarding logger unless cfg sets them.
func newHandler(t testing.TB, cfg webhook.Config) *webhook.Handler {
	t.Helper()
	if cfg.Secrets == nil {
		cfg.Secrets = []string{secret}
	}
	if cfg.Store == nil {
		cfg.Store = webhook.NewMemoryStore(webhook.MemoryOptions{Now: cfg.Now})
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	h, err := webhook.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return h
}

func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

// problemBody is the RFC 9457 body the handler writes.
type problemBody struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// checkProblem asserts rec is a problem+json answer with status, whose body
// names no secret.
func checkProblem(t *testing.T, rec *httptest.ResponseRecorder, status int) problemBody {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status = %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type = %q, want application/problem+json", ct)
	}
	body := rec.Body.String()
	for _, s := range []string{secret, oldSecret, "whsec_"} {
		if strings.Contains(body, s) {
			t.Errorf("problem body names a secret: %s", body)
		}
	}
	var p problemBody
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("problem body %q: %v", body, err)
	}
	if p.Type == "" || p.Title != http.StatusText(status) || p.Status != status || p.Detail == "" {
		t.Errorf("problem = %+v, want type, title %q, status %d and a detail", p, http.StatusText(status), status)
	}
	return p
}

// invoice returns the payload of an invoice.paid event with id.
func invoice(id string, opts ...webhooktest.EventOption) []byte {
	opts = append([]webhooktest.EventOption{webhooktest.WithID(id)}, opts...)
	return webhooktest.NewEvent(stripe.EventTypeInvoicePaid, map[string]any{
		"id": "in_" + id, "object": "invoice", "customer": "cus_marker_42", "amount_paid": 2000,
	}, opts...)
}

// realRedis starts a redis-server and returns a client on it.
func realRedis(t testing.TB) *redis.Client {
	t.Helper()
	return testserver.StartRedis(t).Client(t)
}

// realCluster starts a 3-master Redis Cluster and returns a client on it.
func realCluster(t testing.TB) *redis.ClusterClient {
	t.Helper()
	return testserver.StartCluster(t).Client(t)
}

// prefixes numbers the key prefixes of stores that share a server.
var prefixes atomic.Int64

// uniquePrefix returns a key prefix no other store of this test process
// uses, so that a [redisClock] moves only its own store's keys.
func uniquePrefix() string { return fmt.Sprintf("t%d", prefixes.Add(1)) }

// redisClock lets time pass on the keys of one RedisStore in a real
// redis-server, which keeps its own clock, without waiting: Advance(d)
// shortens the expiry of every key under the prefix by d, and deletes those
// whose expiry d reaches, as the server would after d. A key without an
// expiry fails the test (W4).
type redisClock struct {
	t      testing.TB
	rdb    redis.UniversalClient
	prefix string
}

// advanceScript: KEYS[1] a key, ARGV[1] the time to pass in ms. Returns -1
// for a key without expiry, 1 when it expired, 0 otherwise.
var advanceScript = redis.NewScript(`
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -1 then return -1 end
if ttl < 0 then return 0 end
if ttl <= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('PEXPIRE', KEYS[1], ttl - tonumber(ARGV[1]))
return 0
`)

func (c redisClock) Advance(d time.Duration) {
	c.t.Helper()
	ctx := context.Background()
	advance := func(ctx context.Context, cl *redis.Client) error {
		iter := cl.Scan(ctx, 0, c.prefix+":*", 0).Iterator()
		for iter.Next(ctx) {
			n, err := advanceScript.Run(ctx, cl, []string{iter.Val()}, d.Milliseconds()).Int()
			if err != nil {
				return err
			}
			if n == -1 {
				return fmt.Errorf("key %s has no expiry", iter.Val())
			}
		}
		return iter.Err()
	}
	var err error
	switch cl := c.rdb.(type) {
	case *redis.ClusterClient:
		err = cl.ForEachMaster(ctx, advance)
	case *redis.Client:
		err = advance(ctx, cl)
	default:
		err = fmt.Errorf("unsupported client %T", c.rdb)
	}
	if err != nil {
		c.t.Fatalf("advancing the Redis keys of %s by %v: %v", c.prefix, d, err)
	}
}

func newRedisStore(t testing.TB, rdb redis.UniversalClient, prefix string) *webhook.RedisStore {
	t.Helper()
	s, err := webhook.NewRedisStore(rdb, webhook.RedisOptions{Prefix: prefix})
	if err != nil {
		t.Fatalf("NewRedisStore: %v", err)
	}
	return s
}
