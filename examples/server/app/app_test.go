package app

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/billkit/billkit/examples/server/internal/demo"
	"github.com/billkit/billkit/internal/fakeclock"
	"github.com/billkit/billkit/internal/testserver"
	"github.com/billkit/billkit/quota"
	"github.com/billkit/billkit/webhook/webhooktest"
)

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startRun runs Run in the background with env, and returns the base URL
// it printed, its stdout so far, and a function that cancels it and returns
// Run's result.
func startRun(t *testing.T, env map[string]string) (base string, stdout []string, stop func() error) {
	t.Helper()
	return startRunOutput(t, env, io.Discard, io.Discard)
}

// startRunOutput is startRun that writes Run's logs to stderr and its
// stdout after the listen address to moreStdout.
func startRunOutput(t *testing.T, vars map[string]string, stderr, moreStdout io.Writer) (base string, stdout []string, stop func() error) {
	t.Helper()
	if vars["ADDR"] == "" {
		vars["ADDR"] = "127.0.0.1:0"
	}
	environ := env(vars)
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := Run(ctx, nil, environ, pw, stderr)
		pw.CloseWithError(errors.New("Run returned"))
		done <- err
	}()
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		line := sc.Text()
		stdout = append(stdout, line)
		if v, ok := strings.CutPrefix(line, "listening on "); ok {
			base = "http://" + v
			break
		}
	}
	if base == "" {
		cancel()
		t.Fatalf("Run did not print its address: %v; stdout %q", <-done, stdout)
	}
	go io.Copy(moreStdout, pr)
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { stop() })
	return base, stdout, stop
}

func get(t *testing.T, url string) int {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestRunStartsAndStops(t *testing.T) {
	t.Parallel()
	base, stdout, stop := startRun(t, map[string]string{})
	joined := strings.Join(stdout, "\n")
	for _, want := range []string{"webhook secret: whsec_", "demo api key: demo_"} {
		if !strings.Contains(joined, want) {
			t.Errorf("stdout %q lacks %q", joined, want)
		}
	}
	if code := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run returned %v after cancel, want nil", err)
	}
}

// TestRunConfiguredPrintsNoSecrets checks that configured secrets (the
// Stripe key, the webhook secret, the API keys) appear neither on stdout
// nor in the logs, through requests that log: a Stripe call that fails, a
// mis-signed and a signed webhook delivery, failed authentication.
func TestRunConfiguredPrintsNoSecrets(t *testing.T) {
	t.Parallel()
	const (
		stripeKey     = "sk_test_configuredStripeKey0123"
		webhookSecret = "whsec_configuredWebhookSecret0123"
		apiKey        = "configured-key-0123456789"
	)
	// A Stripe API that refuses every call, as Stripe does a revoked key.
	fakeStripe := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Request-Id", "req_test")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":{"type":"invalid_request_error","message":"Invalid API Key provided"}}`)
	}))
	defer fakeStripe.Close()
	var logs, moreStdout syncBuffer
	base, stdout, stop := startRunOutput(t, map[string]string{
		"STRIPE_SECRET_KEY":     stripeKey,
		"STRIPE_API_BASE":       fakeStripe.URL,
		"STRIPE_WEBHOOK_SECRET": webhookSecret,
		"API_KEYS":              apiKey + ":alice",
	}, &logs, &moreStdout)
	if len(stdout) != 1 || !strings.HasPrefix(stdout[0], "listening on ") {
		t.Errorf("stdout = %q, want only the listen address (configured secrets are never printed)", stdout)
	}

	c := &testClient{t: t, base: base, key: apiKey, secret: webhookSecret, clock: fakeclock.New(time.Now()), sub: demoSub("alice")}
	if r := c.authed("POST", "/billing/checkout", []byte(`{"tier":"pro"}`)); r.Code/100 != 5 {
		t.Errorf("checkout with a refused key = %d %s, want 5xx", r.Code, r.Body)
	}
	c.send("checkout-completed")
	if r := c.authed("POST", "/billing/portal", []byte(`{}`)); r.Code/100 != 5 {
		t.Errorf("portal with a refused key = %d %s, want 5xx", r.Code, r.Body)
	}
	c.secret = "whsec_other"
	c.clock.Add(time.Minute)
	now := c.clock.Now()
	typ, obj, _ := demo.Event("invoice-paid", c.sub, now)
	payload := webhooktest.NewEvent(typ, obj, webhooktest.WithCreated(now))
	if r := c.do("POST", "/billing/webhook", payload, map[string]string{
		"Content-Type": "application/json", webhooktest.SignatureHeader: webhooktest.Sign("whsec_other", payload, now),
	}); r.Code != http.StatusBadRequest {
		t.Errorf("mis-signed event = %d, want 400", r.Code)
	}
	c.key = apiKey + "x"
	c.hello(http.StatusUnauthorized, "")
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	out := strings.Join(stdout, "\n") + moreStdout.String() + logs.String()
	if !strings.Contains(logs.String(), "checkout") {
		t.Fatalf("the failed checkout was not logged; logs:\n%s", logs.String())
	}
	for _, secret := range []string{stripeKey, webhookSecret, apiKey} {
		if strings.Contains(out, secret) {
			t.Errorf("output reveals %s...:\n%s", secret[:8], out)
		}
	}
}

func TestRunErrors(t *testing.T) {
	t.Parallel()
	var stderr bytes.Buffer
	if err := Run(context.Background(), []string{"-h"}, env(nil), io.Discard, &stderr); err != nil {
		t.Errorf("-h: %v", err)
	}
	for _, v := range envVars() {
		if !strings.Contains(stderr.String(), v.Name) {
			t.Errorf("-h does not document %s", v.Name)
		}
	}
	err := Run(context.Background(), nil, env(map[string]string{"ADDR": "nope"}), io.Discard, io.Discard)
	if err == nil || !strings.HasPrefix(err.Error(), "ADDR: ") {
		t.Errorf("bad ADDR: %v", err)
	}
	err = Run(context.Background(), []string{"extra"}, env(nil), io.Discard, io.Discard)
	if err == nil {
		t.Error("an argument was accepted")
	}
	err = Run(context.Background(), nil, env(map[string]string{"REDIS_URL": "redis://127.0.0.1:1"}), io.Discard, io.Discard)
	if err == nil || !strings.HasPrefix(err.Error(), "REDIS_URL: ") {
		t.Errorf("unreachable Redis: %v", err)
	}
}

// TestShutdownDrains checks that a canceled Run waits for in-flight
// requests before it returns.
func TestShutdownDrains(t *testing.T) {
	t.Parallel()
	cfg, err := ConfigFromEnv(env(map[string]string{"ADDR": "127.0.0.1:0"}))
	if err != nil {
		t.Fatal(err)
	}
	app, err := NewApp(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	entered, release := make(chan struct{}), make(chan struct{})
	app.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		w.Write([]byte("done"))
	})
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	ran := make(chan error, 1)
	go func() { ran <- app.Run(ctx, pw); pw.Close() }()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr)
	base := "http://" + strings.TrimSpace(strings.TrimPrefix(line, "listening on "))

	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := http.Get(base + "/slow")
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- result{string(b), err}
	}()
	<-entered
	cancel()
	select {
	case err := <-ran:
		t.Fatalf("Run returned (%v) while a request was in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if r := <-got; r.err != nil || r.body != "done" {
		t.Errorf("in-flight request: %q, %v", r.body, r.err)
	}
	if err := <-ran; err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

// TestShutdownDeadline checks that a request still running when the drain
// deadline passes has its connection closed (so its context ends), and
// that Run reports the unfinished drain.
func TestShutdownDeadline(t *testing.T) {
	t.Parallel()
	cfg, err := ConfigFromEnv(env(map[string]string{"ADDR": "127.0.0.1:0"}))
	if err != nil {
		t.Fatal(err)
	}
	app, err := NewApp(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	app.drain = 50 * time.Millisecond
	entered, handlerDone := make(chan struct{}), make(chan struct{})
	app.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done() // a handler that never finishes by itself
		close(handlerDone)
	})
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	ran := make(chan error, 1)
	go func() { ran <- app.Run(ctx, pw); pw.Close() }()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr)
	base := "http://" + strings.TrimSpace(strings.TrimPrefix(line, "listening on "))
	clientErr := make(chan error, 1)
	go func() {
		resp, err := http.Get(base + "/hang")
		if err == nil {
			resp.Body.Close()
		}
		clientErr <- err
	}()
	<-entered
	cancel()
	if err := <-ran; err == nil || !strings.Contains(err.Error(), "shutdown") {
		t.Errorf("Run = %v, want a shutdown error", err)
	}
	select {
	case <-handlerDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the hanging request's context did not end: its connection was left open")
	}
	if err := <-clientErr; err == nil {
		t.Error("the hanging request got a response, want its connection closed")
	}
}

// TestRedisHealthAndEviction runs against a real redis-server whose
// maxmemory-policy evicts keys: the server warns at start, /healthz answers
// 200 while Redis is up and 503 once it is down.
func TestRedisHealthAndEviction(t *testing.T) {
	t.Parallel()
	rs := testserver.StartRedis(t, "--maxmemory-policy", "allkeys-lru")
	var logs syncBuffer
	cfg, err := ConfigFromEnv(env(map[string]string{"REDIS_URL": "redis://" + rs.Addr + "/0"}))
	if err != nil {
		t.Fatal(err)
	}
	app, err := NewApp(context.Background(), cfg, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	if !strings.Contains(logs.String(), `"level":"WARN","msg":"redis maxmemory-policy evicts keys`) ||
		!strings.Contains(logs.String(), `"maxmemory-policy":"allkeys-lru"`) {
		t.Errorf("no eviction warning in the logs:\n%s", logs.String())
	}
	h := app.Handler()
	health := func() int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
		return rec.Code
	}
	if code := health(); code != http.StatusOK {
		t.Errorf("/healthz with Redis up = %d", code)
	}
	rs.Stop()
	if code := health(); code != http.StatusServiceUnavailable {
		t.Errorf("/healthz with Redis down = %d, want 503", code)
	}
	if err := rs.Start(); err != nil {
		t.Fatal(err)
	}
	if code := health(); code != http.StatusOK {
		t.Errorf("/healthz after Redis returned = %d", code)
	}
}

func TestNoEvictionWarningWithNoeviction(t *testing.T) {
	t.Parallel()
	rs := testserver.StartRedis(t)
	var logs syncBuffer
	cfg, err := ConfigFromEnv(env(map[string]string{"REDIS_URL": "redis://" + rs.Addr}))
	if err != nil {
		t.Fatal(err)
	}
	app, err := NewApp(context.Background(), cfg, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	if strings.Contains(logs.String(), "maxmemory-policy") {
		t.Errorf("eviction warning with noeviction:\n%s", logs.String())
	}
}

// TestRedisCluster runs the server's Redis-backed pieces on a three-master
// Redis Cluster through a redis+cluster:// URL.
func TestRedisCluster(t *testing.T) {
	t.Parallel()
	cl := testserver.StartCluster(t)
	u := "redis+cluster://" + cl.Addrs[0] + "?addr=" + cl.Addrs[1] + "&addr=" + cl.Addrs[2]
	base, stdout, _ := startRun(t, map[string]string{"REDIS_URL": u})
	var key, secret string
	for _, l := range stdout {
		if v, ok := strings.CutPrefix(l, "demo api key: "); ok {
			key = v
		}
		if v, ok := strings.CutPrefix(l, "webhook secret: "); ok {
			secret = v
		}
	}
	c := &testClient{t: t, base: base, key: key, secret: secret, clock: fakeclock.New(time.Now()), sub: demoSub("demo")}
	if code := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}
	c.hello(http.StatusPaymentRequired, "")
	c.send("subscription-created")
	c.allowed("pro", proHard, proHard-1)
	c.wantUsage("active", "pro", 1)
}

// heldSettles is a quota.Store whose settles wait until release is
// closed (or their context ends), standing in for a slow Redis.
type heldSettles struct {
	quota.Store
	release chan struct{}
	started chan struct{} // closed by the first settle
	once    sync.Once
	settled atomic.Int64 // settles that reached the store
}

func (s *heldSettles) Settle(ctx context.Context, req quota.TakeRequest, amounts []int64) error {
	s.once.Do(func() { close(s.started) })
	select {
	case <-s.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	err := s.Store.Settle(ctx, req, amounts)
	if err == nil {
		s.settled.Add(1)
	}
	return err
}

// TestShutdownWaitsForSettles checks that a canceled Run, once the server
// has shut down, waits for the settle that a completion started after its
// response, and that Close releases Redis only after it: the tokens are
// counted, none stay reserved.
func TestShutdownWaitsForSettles(t *testing.T) {
	t.Parallel()
	const (
		key    = "settle-key-0123456789abcdef"
		secret = "whsec_settle_test_secret"
	)
	cfg, err := ConfigFromEnv(env(map[string]string{"ADDR": "127.0.0.1:0", "API_KEYS": key + ":alice", "STRIPE_WEBHOOK_SECRET": secret}))
	if err != nil {
		t.Fatal(err)
	}
	app, err := NewApp(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	held := &heldSettles{Store: app.counters, release: make(chan struct{}), started: make(chan struct{})}
	if app.completions, err = app.newCompletions(held); err != nil {
		t.Fatal(err)
	}
	if app.handler, err = app.routes(); err != nil {
		t.Fatal(err)
	}
	var (
		period             quota.Period // the subscription's
		usage              quota.Usage  // the token meter's, read just before Redis closes
		settledBeforeClose int64
	)
	closeRedis := app.closeRedis
	app.closeRedis = func() error {
		settledBeforeClose = held.settled.Load()
		usage, _ = app.counters.Usage(context.Background(), "alice", tokensMeter, period)
		return closeRedis()
	}

	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	ran := make(chan error, 1)
	go func() { ran <- app.Run(ctx, pw); pw.Close() }()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr)
	base := "http://" + strings.TrimSpace(strings.TrimPrefix(line, "listening on "))
	c := &testClient{t: t, base: base, key: key, secret: secret, clock: fakeclock.New(time.Now()), sub: demoSub("alice")}
	c.send(demo.SubscriptionCreated)
	sub := c.sub.WithDefaults(c.clock.Now())
	period = quota.Period{Start: sub.PeriodStart, End: sub.PeriodEnd}
	r := c.complete(`{"prompt":"a b c","max_tokens":50}`, http.StatusOK, "")
	var got completionResponse
	if err := json.Unmarshal(r.Body, &got); err != nil {
		t.Fatal(err)
	}
	<-held.started // the settle is on its way, held
	cancel()
	select {
	case err := <-ran:
		t.Fatalf("Run returned (%v) while a settle was on its way", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(held.release)
	if err := <-ran; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if n := held.settled.Load(); n != 1 {
		t.Fatalf("%d settles reached the store, want 1", n)
	}
	if err := app.Close(); err != nil {
		t.Fatal(err)
	}
	if settledBeforeClose != 1 || usage.Used != got.Usage.TotalTokens || usage.Reserved != 0 {
		t.Errorf("before Redis closed: %d settles, token meter %+v; want 1 settle, the %d tokens used and none reserved",
			settledBeforeClose, usage, got.Usage.TotalTokens)
	}
}

// TestCloseWaitsForSettles checks that Close, for an App whose handler is
// served by another server than Run's, waits for a settle on its way
// before it releases Redis.
func TestCloseWaitsForSettles(t *testing.T) {
	t.Parallel()
	app, c := startApp(t, nil)
	held := &heldSettles{Store: app.counters, release: make(chan struct{}), started: make(chan struct{})}
	var err error
	if app.completions, err = app.newCompletions(held); err != nil {
		t.Fatal(err)
	}
	h, err := app.routes()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	c.base = srv.URL
	c.send(demo.SubscriptionCreated)
	c.complete(`{"prompt":"a b c"}`, http.StatusOK, "")
	<-held.started
	var settled int64 = -1
	closeRedis := app.closeRedis
	app.closeRedis = func() error {
		settled = held.settled.Load()
		return closeRedis()
	}
	closed := make(chan error, 1)
	go func() { closed <- app.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a settle was on its way", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(held.release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if settled != 1 {
		t.Errorf("Redis closed after %d settles, want 1", settled)
	}
}
