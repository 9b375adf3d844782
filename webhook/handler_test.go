package webhook_test

import (
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stripe/stripe-go/v76"
	stripewebhook "github.com/stripe/stripe-go/v76/webhook"

	"github.com/billkit/billkit/webhook"
	"github.com/billkit/billkit/webhook/webhooktest"
)

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	store := webhook.NewMemoryStore(webhook.MemoryOptions{})
	tests := []struct {
		name  string
		cfg   webhook.Config
		field string // named by the error; "" when New succeeds
	}{
		{"zero config", webhook.Config{}, "Secrets"},
		{"no secret", webhook.Config{Store: store}, "Secrets"},
		{"only empty secrets", webhook.Config{Secrets: []string{""}, Store: store}, "Secrets"},
		{"no store", webhook.Config{Secrets: []string{secret}}, "Store"},
		{"retention under 72h", webhook.Config{Secrets: []string{secret}, Store: store, Retention: 71 * time.Hour}, "Retention"},
		{"negative tolerance", webhook.Config{Secrets: []string{secret}, Store: store, Tolerance: -1}, "Tolerance"},
		{"negative body limit", webhook.Config{Secrets: []string{secret}, Store: store, MaxBodyBytes: -1}, "MaxBodyBytes"},
		{"negative lease", webhook.Config{Secrets: []string{secret}, Store: store, Lease: -time.Second}, "Lease"},
		{"negative handler timeout", webhook.Config{Secrets: []string{secret}, Store: store, HandlerTimeout: -time.Second}, "HandlerTimeout"},
		{"negative retention", webhook.Config{Secrets: []string{secret}, Store: store, Retention: -time.Hour}, "Retention"},
		{"handler timeout not below lease", webhook.Config{Secrets: []string{secret}, Store: store, Lease: time.Second, HandlerTimeout: time.Second}, "HandlerTimeout"},
		{"defaults", webhook.Config{Secrets: []string{secret}, Store: store}, ""},
		{"retention exactly 72h", webhook.Config{Secrets: []string{secret}, Store: store, Retention: webhook.MinRetention}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, err := webhook.New(tt.cfg)
			if tt.field == "" {
				if err != nil || h == nil {
					t.Fatalf("New = %v, %v; want a handler", h, err)
				}
				return
			}
			if !errors.Is(err, webhook.ErrInvalidConfig) || h != nil {
				t.Fatalf("New = %v, %v; want no handler and ErrInvalidConfig", h, err)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("error %q does not name %s", err, tt.field)
			}
			for _, s := range tt.cfg.Secrets {
				if s != "" && strings.Contains(err.Error(), s) {
					t.Errorf("error %q names a secret", err)
				}
			}
		})
	}
}

// TestDefaultLogger: a Config without a Logger logs to slog.Default as of
// New. It changes the process's default logger, so it does not run in
// parallel.
func TestDefaultLogger(t *testing.T) {
	var logs safeBuffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, nil)))
	t.Cleanup(func() { slog.SetDefault(prev) })

	h, err := webhook.New(webhook.Config{Secrets: []string{secret}, Store: webhook.NewMemoryStore(webhook.MemoryOptions{})})
	if err != nil {
		t.Fatal(err)
	}
	h.OnAny(func(context.Context, *stripe.Event) error { return nil })
	if rec := serve(h, webhooktest.Request(secret, invoice("evt_log"))); rec.Code != http.StatusOK {
		t.Fatalf("status = %d, want 200", rec.Code)
	}
	if got := logs.String(); !strings.Contains(got, "webhook: handled") || !strings.Contains(got, "evt_log") {
		t.Fatalf("default logger got %q, want the delivery's record", got)
	}
}

// TestVerification is W1: nothing that is not validly signed, with a
// configured secret and within the tolerance, reaches a handler.
func TestVerification(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	now := clock.Now()
	payload := invoice("evt_w1")
	other := invoice("evt_w1_other")
	valid := webhooktest.Sign(secret, payload, now)
	ts, sig, _ := strings.Cut(valid, ",")
	forged := ts + ",v1=" + hex.EncodeToString(make([]byte, 32))

	tests := []struct {
		name   string
		header string
		body   []byte
	}{
		{"no header", "", payload},
		{"forged signature", forged, payload},
		{"wrong secret", webhooktest.Sign("whsec_attacker", payload, now), payload},
		{"malformed header", "garbage", payload},
		{"malformed timestamp", "t=soon," + sig, payload},
		{"no v1 signature", ts + ",v0=" + strings.TrimPrefix(sig, "v1="), payload},
		{"non-hex signature", ts + ",v1=zz", payload},
		{"stale timestamp", webhooktest.Sign(secret, payload, now.Add(-webhook.DefaultTolerance-time.Second)), payload},
		{"timestamp beyond the tolerance ahead", webhooktest.Sign(secret, payload, now.Add(webhook.DefaultTolerance+time.Second)), payload},
		{"timestamp in a far future", webhooktest.Sign(secret, payload, now.AddDate(100, 0, 0)), payload},
		{"timestamp at the int64 limit", signAtUnix(secret, payload, math.MaxInt64), payload},
		{"negative timestamp", signAtUnix(secret, payload, -1), payload},
		{"no timestamp", sig, payload},
		{"several timestamps, the signed one stale", ts + "," + webhooktest.Sign(secret, payload, now.Add(-time.Hour)), payload},
		{"signature over a different body", webhooktest.Sign(secret, other, now), payload},
		{"timestamp swapped after signing", "t=" + strconv.FormatInt(now.Unix()+1, 10) + "," + sig, payload},
		{"body with a trailing byte", valid, append(append([]byte{}, payload...), ' ')},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var c counter
			h := newHandler(t, webhook.Config{Now: clock.Now})
			h.On(stripe.EventTypeInvoicePaid, c.handle)
			h.OnAny(c.handle)
			r := httptest.NewRequest(http.MethodPost, "/webhook", strings.NewReader(string(tt.body)))
			if tt.header != "" {
				r.Header.Set("Stripe-Signature", tt.header)
			}
			checkProblem(t, serve(h, r), http.StatusBadRequest)
			if n := c.all(); n != 0 {
				t.Fatalf("handler ran %d times for an invalid delivery", n)
			}
		})
	}

	t.Run("valid within tolerance", func(t *testing.T) {
		t.Parallel()
		var c counter
		h := newHandler(t, webhook.Config{Now: clock.Now})
		h.On(stripe.EventTypeInvoicePaid, c.handle)
		// Signed 4m59s ago: still inside the 5 minute tolerance.
		r := webhooktest.RequestAt(secret, payload, now.Add(-webhook.DefaultTolerance+time.Second))
		if rec := serve(h, r); rec.Code != http.StatusOK {
			t.Fatalf("status = %d, want 200; body %s", rec.Code, rec.Body)
		}
		if c.count("evt_w1") != 1 {
			t.Fatalf("handler calls = %d, want 1", c.count("evt_w1"))
		}
	})

	t.Run("clock skew within tolerance", func(t *testing.T) {
		t.Parallel()
		var c counter
		h := newHandler(t, webhook.Config{Now: clock.Now})
		h.OnAny(c.handle)
		// Signed 4m59s ahead of this server's clock.
		r := webhooktest.RequestAt(secret, payload, now.Add(webhook.DefaultTolerance-time.Second))
		if rec := serve(h, r); rec.Code != http.StatusOK {
			t.Fatalf("status = %d, want 200; body %s", rec.Code, rec.Body)
		}
	})

	t.Run("custom tolerance", func(t *testing.T) {
		t.Parallel()
		var c counter
		h := newHandler(t, webhook.Config{Now: clock.Now, Tolerance: 30 * time.Second})
		h.OnAny(c.handle)
		checkProblem(t, serve(h, webhooktest.RequestAt(secret, payload, now.Add(-31*time.Second))), http.StatusBadRequest)
		checkProblem(t, serve(h, webhooktest.RequestAt(secret, payload, now.Add(31*time.Second))), http.StatusBadRequest)
		if rec := serve(h, webhooktest.RequestAt(secret, payload, now.Add(-29*time.Second))); rec.Code != http.StatusOK {
			t.Fatalf("status = %d, want 200", rec.Code)
		}
	})

	t.Run("rotation accepts either secret", func(t *testing.T) {
		t.Parallel()
		var c counter
		h := newHandler(t, webhook.Config{Secrets: []string{secret, oldSecret}, Now: clock.Now})
		h.OnAny(c.handle)
		for _, s := range []string{oldSecret, secret} {
			p := invoice("evt_rot_" + s)
			if rec := serve(h, webhooktest.RequestAt(s, p, now)); rec.Code != http.StatusOK {
				t.Fatalf("signed with %s: status = %d, want 200", s[:10], rec.Code)
			}
			if c.count("evt_rot_"+s) != 1 {
				t.Fatalf("signed with %s: handler did not run", s[:10])
			}
		}
		// Stripe sends one v1 per active secret while rolling.
		p := invoice("evt_rot_both")
		both := webhooktest.Sign("whsec_unknown", p, now) + "," + strings.Split(webhooktest.Sign(oldSecret, p, now), ",")[1]
		r := webhooktest.RequestAt(secret, p, now)
		r.Header.Set("Stripe-Signature", both)
		if rec := serve(h, r); rec.Code != http.StatusOK {
			t.Fatalf("two v1 signatures, one valid: status = %d, want 200", rec.Code)
		}
		// A third secret verifies nothing.
		checkProblem(t, serve(h, webhooktest.RequestAt("whsec_third", invoice("evt_rot_3"), now)), http.StatusBadRequest)
	})
}

// signAtUnix signs payload with secret at the Unix time sec, which need not
// be a time a [time.Time] round-trips.
func signAtUnix(secret string, payload []byte, sec int64) string {
	t := strconv.FormatInt(sec, 10)
	return "t=" + t + ",v1=" + hex.EncodeToString(stripewebhook.ComputeSignature(time.Unix(sec, 0), payload, secret))
}

// failingStore fails every call.
type failingStore struct{}

func (failingStore) Claim(context.Context, string, time.Duration) (webhook.Claim, error) {
	return webhook.Claim{}, errors.New("dial tcp 10.0.0.7:6379: connection refused")
}
func (failingStore) Complete(context.Context, string, string, time.Duration) error { return nil }
func (failingStore) Release(context.Context, string, string) error                 { return nil }

// TestStatuses is W3 and W6: every answer's status, content type and body
// shape, with no secret, handler error or store error in a body or a log.
func TestStatuses(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	type setup struct {
		h     *webhook.Handler
		store *webhook.MemoryStore
		calls *atomic.Int64
	}
	build := func(t *testing.T, logs *safeBuffer, cfg webhook.Config) setup {
		store := webhook.NewMemoryStore(webhook.MemoryOptions{Now: clock.Now})
		if cfg.Store == nil {
			cfg.Store = store
		}
		cfg.Now = clock.Now
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		h := newHandler(t, cfg)
		var calls atomic.Int64
		h.On(stripe.EventTypeInvoicePaid, func(context.Context, *stripe.Event) error { calls.Add(1); return nil })
		h.On(stripe.EventTypeInvoicePaymentFailed, func(context.Context, *stripe.Event) error {
			calls.Add(1)
			return errors.New("insert into ledger: password=hunter2 rejected")
		})
		h.On(stripe.EventTypeChargeRefunded, func(context.Context, *stripe.Event) error {
			calls.Add(1)
			panic("nil map write in refund")
		})
		return setup{h, store, &calls}
	}
	sign := func(p []byte) *http.Request { return webhooktest.RequestAt(secret, p, clock.Now()) }
	typed := func(typ stripe.EventType, id string) []byte {
		return webhooktest.NewEvent(typ, map[string]any{"id": "obj_1", "object": "invoice"}, webhooktest.WithID(id))
	}

	tests := []struct {
		name      string
		cfg       webhook.Config
		prepare   func(t *testing.T, s setup)
		req       func() *http.Request
		status    int
		calls     int64
		problem   bool
		wantAllow bool
	}{
		{name: "GET", req: func() *http.Request { return httptest.NewRequest(http.MethodGet, "/webhook", nil) }, status: 405, problem: true, wantAllow: true},
		{name: "PUT signed", req: func() *http.Request {
			r := sign(invoice("evt_put"))
			r.Method = http.MethodPut
			return r
		}, status: 405, problem: true, wantAllow: true},
		{name: "body over the limit, known length", cfg: webhook.Config{MaxBodyBytes: 512}, req: func() *http.Request {
			return sign(typed(stripe.EventTypeInvoicePaid, "evt_big_"+strings.Repeat("x", 600)))
		}, status: 413, problem: true},
		{name: "body over the limit, chunked", cfg: webhook.Config{MaxBodyBytes: 512}, req: func() *http.Request {
			r := sign(typed(stripe.EventTypeInvoicePaid, "evt_big_"+strings.Repeat("x", 600)))
			r.ContentLength = -1
			return r
		}, status: 413, problem: true},
		{name: "missing signature", req: func() *http.Request {
			r := sign(invoice("evt_nosig"))
			r.Header.Del("Stripe-Signature")
			return r
		}, status: 400, problem: true},
		{name: "bad JSON", req: func() *http.Request { return sign([]byte(`{"id":"evt_1","type":`)) }, status: 400, problem: true},
		{name: "JSON array", req: func() *http.Request { return sign([]byte(`[1,2]`)) }, status: 400, problem: true},
		{name: "event without id", req: func() *http.Request {
			return sign([]byte(`{"object":"event","type":"invoice.paid","data":{"object":{"id":"in_1"}}}`))
		}, status: 400, problem: true},
		{name: "event without type", req: func() *http.Request {
			return sign([]byte(`{"id":"evt_notype","object":"event","data":{"object":{"id":"in_1"}}}`))
		}, status: 400, problem: true},
		{name: "handled", req: func() *http.Request { return sign(invoice("evt_ok")) }, status: 200, calls: 1},
		{name: "unknown type acknowledged", req: func() *http.Request {
			return sign(typed("radar.early_fraud_warning.created", "evt_unknown"))
		}, status: 200},
		{name: "duplicate", prepare: func(t *testing.T, s setup) {
			if rec := serve(s.h, sign(invoice("evt_dup"))); rec.Code != 200 {
				t.Fatalf("first delivery = %d", rec.Code)
			}
			s.calls.Store(0)
		}, req: func() *http.Request { return sign(invoice("evt_dup")) }, status: 200},
		{name: "in flight elsewhere", prepare: func(t *testing.T, s setup) {
			if _, err := s.store.Claim(context.Background(), "evt_busy", time.Minute); err != nil {
				t.Fatal(err)
			}
		}, req: func() *http.Request { return sign(invoice("evt_busy")) }, status: 409, problem: true},
		{name: "handler error", req: func() *http.Request { return sign(typed(stripe.EventTypeInvoicePaymentFailed, "evt_fail")) }, status: 500, calls: 1, problem: true},
		{name: "handler panic", req: func() *http.Request { return sign(typed(stripe.EventTypeChargeRefunded, "evt_panic")) }, status: 500, calls: 1, problem: true},
		{name: "store down", cfg: webhook.Config{Store: failingStore{}}, req: func() *http.Request { return sign(invoice("evt_store")) }, status: 503, problem: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var logs safeBuffer
			s := build(t, &logs, tt.cfg)
			if tt.prepare != nil {
				tt.prepare(t, s)
			}
			rec := serve(s.h, tt.req())
			if tt.problem {
				checkProblem(t, rec, tt.status)
			} else {
				if rec.Code != tt.status {
					t.Fatalf("status = %d, want %d; body %s", rec.Code, tt.status, rec.Body)
				}
				if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q, want application/json", ct)
				}
				if !strings.Contains(rec.Body.String(), `"received":true`) {
					t.Errorf("ack body = %s", rec.Body)
				}
			}
			if got := rec.Header().Get("Allow"); tt.wantAllow && got != http.MethodPost {
				t.Errorf("Allow = %q, want POST", got)
			}
			if n := s.calls.Load(); n != tt.calls {
				t.Errorf("handler calls = %d, want %d", n, tt.calls)
			}
			body := rec.Body.String()
			for _, leak := range []string{"hunter2", "ledger", "10.0.0.7", "nil map", "goroutine"} {
				if strings.Contains(body, leak) {
					t.Errorf("body leaks %q: %s", leak, body)
				}
			}
			log := logs.String()
			for _, leak := range []string{secret, "whsec_", "v1=", "cus_marker_42", "amount_paid"} {
				if strings.Contains(log, leak) {
					t.Errorf("log leaks %q:\n%s", leak, log)
				}
			}
		})
	}

	for _, fail := range []struct {
		name string
		fail func() error
	}{
		{"error", func() error { return errors.New("transient") }},
		{"panic", func() error { panic("transient") }},
	} {
		t.Run("failed event is retried, then never again: "+fail.name, func(t *testing.T) {
			t.Parallel()
			var calls atomic.Int64
			h := newHandler(t, webhook.Config{Now: clock.Now})
			h.On(stripe.EventTypeInvoicePaid, func(context.Context, *stripe.Event) error {
				if calls.Add(1) == 1 {
					return fail.fail()
				}
				return nil
			})
			p := invoice("evt_retry")
			// The failed claim is released: the next delivery runs the
			// handler at once (200), not 409 until the lease expires.
			want := []int{500, 200, 200, 200}
			got := webhooktest.Deliverer{Secret: secret, Copies: 4, Now: clock.Now}.Deliver(t, h, p).Statuses()
			if !slices.Equal(got, want) {
				t.Fatalf("statuses = %v, want %v", got, want)
			}
			if n := calls.Load(); n != 2 {
				t.Fatalf("handler calls = %d, want 2 (the failure and the retry)", n)
			}
		})
	}

	t.Run("handlers run in order, stop at the first error", func(t *testing.T) {
		t.Parallel()
		var order []string
		h := newHandler(t, webhook.Config{Now: clock.Now})
		h.OnAny(func(context.Context, *stripe.Event) error { order = append(order, "any"); return nil })
		h.On(stripe.EventTypeInvoicePaid,
			func(context.Context, *stripe.Event) error { order = append(order, "a"); return nil },
			nil,
			func(context.Context, *stripe.Event) error { order = append(order, "b"); return nil })
		h.On(stripe.EventTypeInvoicePaid, func(ctx context.Context, ev *stripe.Event) error {
			order = append(order, "c")
			if tok, ok := webhook.TokenFromContext(ctx); !ok || tok == "" {
				t.Error("no claim token in the handler context")
			}
			if _, ok := ctx.Deadline(); !ok {
				t.Error("no deadline on the handler context")
			}
			return nil
		})
		serve(h, webhooktest.RequestAt(secret, invoice("evt_order"), clock.Now()))
		if got := strings.Join(order, ","); got != "a,b,c,any" {
			t.Fatalf("order = %s, want a,b,c,any", got)
		}
		order = nil
		h.On(stripe.EventTypeInvoicePaid, func(context.Context, *stripe.Event) error { return errors.New("x") })
		if rec := serve(h, webhooktest.RequestAt(secret, invoice("evt_order2"), clock.Now())); rec.Code != 500 {
			t.Fatalf("status = %d, want 500", rec.Code)
		}
		if got := strings.Join(order, ","); got != "a,b,c" {
			t.Fatalf("order = %s, want a,b,c (any not run after the failure)", got)
		}
	})
}

// TestAPIVersion is W5.
func TestAPIVersion(t *testing.T) {
	t.Parallel()
	const other = "2020-08-27"
	if other == stripe.APIVersion {
		t.Fatal("pick another version")
	}
	for _, tt := range []struct {
		name    string
		strict  bool
		version string
		status  int
	}{
		{"other version accepted by default", false, other, 200},
		{"pinned version accepted by default", false, stripe.APIVersion, 200},
		{"other version rejected when strict", true, other, 400},
		{"pinned version accepted when strict", true, stripe.APIVersion, 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var seen []string
			h := newHandler(t, webhook.Config{StrictAPIVersion: tt.strict})
			h.OnAny(func(_ context.Context, ev *stripe.Event) error { seen = append(seen, ev.APIVersion); return nil })
			rec := serve(h, webhooktest.Request(secret, invoice("evt_v", webhooktest.WithAPIVersion(tt.version))))
			if tt.status == 400 {
				checkProblem(t, rec, 400)
				if len(seen) != 0 {
					t.Fatalf("handler ran for a rejected version")
				}
				return
			}
			if rec.Code != tt.status {
				t.Fatalf("status = %d, want %d", rec.Code, tt.status)
			}
			if len(seen) != 1 || seen[0] != tt.version {
				t.Fatalf("handler saw versions %v, want [%s]", seen, tt.version)
			}
		})
	}
}

// countingStore counts InFlight answers of the store it wraps and closes
// reached when they number want.
type countingStore struct {
	webhook.Store
	want     int64
	inFlight atomic.Int64
	reached  chan struct{}
}

func newCountingStore(s webhook.Store, want int64) *countingStore {
	return &countingStore{Store: s, want: want, reached: make(chan struct{})}
}

func (s *countingStore) Claim(ctx context.Context, id string, lease time.Duration) (webhook.Claim, error) {
	c, err := s.Store.Claim(ctx, id, lease)
	if err == nil && c.Status == webhook.InFlight && s.inFlight.Add(1) == s.want {
		close(s.reached)
	}
	return c, err
}

// TestConcurrentDuplicates is W2: 50 concurrent deliveries of one event run
// its handler exactly once, through the real Handler.
func TestConcurrentDuplicates(t *testing.T) {
	t.Parallel()
	stores := map[string]func(t *testing.T) webhook.Store{
		"memory": func(t *testing.T) webhook.Store { return webhook.NewMemoryStore(webhook.MemoryOptions{}) },
		"redis":  func(t *testing.T) webhook.Store { return newRedisStore(t, realRedis(t), "") },
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			const n = 50
			store := newCountingStore(open(t), n-1)
			h := newHandler(t, webhook.Config{Store: store})
			var calls atomic.Int64
			overlap := make(chan struct{})
			h.On(stripe.EventTypeInvoicePaid, func(ctx context.Context, _ *stripe.Event) error {
				if calls.Add(1) == 2 {
					close(overlap)
				}
				// Hold the lease until every other delivery saw it in
				// flight, or stop at once when a second delivery runs the
				// handler too (the assertions below then fail).
				select {
				case <-store.reached:
				case <-overlap:
				case <-ctx.Done():
				}
				return nil
			})
			res := webhooktest.Deliverer{Secret: secret, Copies: n, Concurrency: n}.Deliver(t, h, invoice("evt_w2_"+name))
			if c := calls.Load(); c != 1 {
				t.Fatalf("handler ran %d times, want 1", c)
			}
			if res.Count(200) != 1 || res.Count(409) != n-1 {
				t.Fatalf("statuses: %d×200, %d×409; want 1 and %d", res.Count(200), res.Count(409), n-1)
			}
			// After completion every redelivery is a duplicate.
			res = webhooktest.Deliverer{Secret: secret, Copies: n, Concurrency: 8}.Deliver(t, h, invoice("evt_w2_"+name))
			if res.Count(200) != n || calls.Load() != 1 {
				t.Fatalf("redeliveries: %d×200 and %d handler calls; want %d and 1", res.Count(200), calls.Load(), n)
			}
		})
	}

	t.Run("many events shuffled", func(t *testing.T) {
		t.Parallel()
		var c counter
		h := newHandler(t, webhook.Config{Store: newRedisStore(t, realRedis(t), "")})
		h.OnAny(c.handle)
		var events [][]byte
		for i := range 20 {
			events = append(events, invoice("evt_many_"+strconv.Itoa(i)))
		}
		d := webhooktest.Deliverer{Secret: secret, Copies: 5, Concurrency: 10, Shuffle: true, Seed: 7}
		// Retry 409s as Stripe would, until every event is acknowledged.
		for round := 0; round < 50; round++ {
			res := d.Deliver(t, h, events...)
			if res.Count(200) == len(res) {
				break
			}
			if res.Count(200)+res.Count(409) != len(res) {
				t.Fatalf("unexpected statuses %v", res.Statuses())
			}
		}
		for i := range events {
			if n := c.count("evt_many_" + strconv.Itoa(i)); n != 1 {
				t.Fatalf("event %d ran %d times, want 1", i, n)
			}
		}
	})
}

// TestCrashedClaimExpires is W2's crash case: a claim whose holder died
// (claimed, never completed nor released) blocks deliveries (409) until its
// lease has passed, and not longer.
func TestCrashedClaimExpires(t *testing.T) {
	t.Parallel()
	type backend struct {
		store   webhook.Store
		advance func(time.Duration)
		lease   time.Duration
	}
	backends := map[string]func(t *testing.T) backend{
		"memory fake clock": func(t *testing.T) backend {
			clock := newFakeClock()
			return backend{webhook.NewMemoryStore(webhook.MemoryOptions{Now: clock.Now}), clock.Add, time.Minute}
		},
		"miniredis": func(t *testing.T) backend {
			mr := miniredis.RunT(t)
			rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
			t.Cleanup(func() { rdb.Close() })
			return backend{newRedisStore(t, rdb, ""), mr.FastForward, time.Minute}
		},
		"real redis": func(t *testing.T) backend {
			rdb, prefix := realRedis(t), uniquePrefix()
			return backend{newRedisStore(t, rdb, prefix), redisClock{t, rdb, prefix}.Advance, time.Minute}
		},
	}
	for name, open := range backends {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := open(t)
			var c counter
			h := newHandler(t, webhook.Config{Store: b.store, Lease: b.lease})
			h.OnAny(c.handle)
			p := invoice("evt_crash")
			// A delivery claims the event, then its process dies.
			if cl, err := b.store.Claim(context.Background(), "evt_crash", b.lease); err != nil || cl.Status != webhook.Claimed {
				t.Fatalf("crashing claim = %+v, %v", cl, err)
			}
			b.advance(b.lease / 2)
			if rec := serve(h, webhooktest.Request(secret, p)); rec.Code != http.StatusConflict {
				t.Fatalf("before the lease ended: status = %d, want 409", rec.Code)
			}
			if c.all() != 0 {
				t.Fatal("handler ran while the crashed claim's lease held")
			}
			b.advance(b.lease/2 + b.lease/5)
			if rec := serve(h, webhooktest.Request(secret, p)); rec.Code != http.StatusOK {
				t.Fatalf("after the lease: status = %d, want 200", rec.Code)
			}
			if rec := serve(h, webhooktest.Request(secret, p)); rec.Code != http.StatusOK {
				t.Fatalf("duplicate: status = %d, want 200", rec.Code)
			}
			if n := c.count("evt_crash"); n != 1 {
				t.Fatalf("handler ran %d times, want 1", n)
			}
		})
	}
}

// TestLeaseLostStillAcknowledged: a handler that outlives its lease, while
// another delivery takes the event over, is answered 200 (its effect is
// applied) and cannot complete the new holder's claim.
func TestLeaseLostStillAcknowledged(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := webhook.NewMemoryStore(webhook.MemoryOptions{Now: clock.Now})
	h := newHandler(t, webhook.Config{Store: store, Now: clock.Now})
	var takeover webhook.Claim
	h.OnAny(func(context.Context, *stripe.Event) error {
		clock.Add(2 * webhook.DefaultLease)
		var err error
		takeover, err = store.Claim(context.Background(), "evt_slow", webhook.DefaultLease)
		return err
	})
	rec := serve(h, webhooktest.RequestAt(secret, invoice("evt_slow"), clock.Now()))
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d, want 200", rec.Code)
	}
	if takeover.Status != webhook.Claimed {
		t.Fatalf("takeover = %v, want claimed", takeover.Status)
	}
	// The takeover's lease is untouched: still in flight, not done.
	if c, _ := store.Claim(context.Background(), "evt_slow", time.Minute); c.Status != webhook.InFlight {
		t.Fatalf("after the slow holder finished: %v, want in_flight", c.Status)
	}
}

// TestHandlerContextDetached: a delivery whose connection ends while the
// handlers run (Stripe timed out, or hung up) is not canceled half way: the
// handlers' context keeps its own deadline, HandlerTimeout, and the event is
// completed.
func TestHandlerContextDetached(t *testing.T) {
	t.Parallel()
	store := webhook.NewMemoryStore(webhook.MemoryOptions{})
	h := newHandler(t, webhook.Config{Store: store, Lease: time.Hour, HandlerTimeout: 30 * time.Minute})
	reqCtx, hangUp := context.WithTimeout(context.Background(), time.Hour)
	defer hangUp()
	h.OnAny(func(ctx context.Context, ev *stripe.Event) error {
		hangUp()
		if err := ctx.Err(); err != nil {
			t.Errorf("handler context ended with the request: %v", err)
		}
		dl, ok := ctx.Deadline()
		if left := time.Until(dl); !ok || left > 30*time.Minute || left < 29*time.Minute {
			t.Errorf("handler deadline in %v (set %v), want HandlerTimeout (30m)", left, ok)
		}
		return nil
	})
	r := webhooktest.Request(secret, invoice("evt_hangup")).WithContext(reqCtx)
	if rec := serve(h, r); rec.Code != http.StatusOK {
		t.Fatalf("status = %d, want 200", rec.Code)
	}
	if c, err := store.Claim(context.Background(), "evt_hangup", time.Minute); err != nil || c.Status != webhook.Done {
		t.Fatalf("after the delivery: %v, %v; want done", c.Status, err)
	}
}

// TestOnWhileServing registers handlers while deliveries run (run with
// -race).
func TestOnWhileServing(t *testing.T) {
	t.Parallel()
	h := newHandler(t, webhook.Config{})
	var c counter
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 50 {
			h.On(stripe.EventTypeInvoicePaid, c.handle)
			h.OnAny(func(context.Context, *stripe.Event) error { return nil })
		}
	}()
	var events [][]byte
	for i := range 50 {
		events = append(events, invoice("evt_on_"+strconv.Itoa(i)))
	}
	res := webhooktest.Deliverer{Secret: secret, Concurrency: 4}.Deliver(t, h, events...)
	<-done
	if res.Count(200) != len(events) {
		t.Fatalf("statuses %v", res.Statuses())
	}
}
