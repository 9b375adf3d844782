package main

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/billkit/billkit/internal/fakeclock"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/billkit/billkit/examples/server/internal/demo"
	"github.com/billkit/billkit/internal/testserver"
	"github.com/billkit/billkit/quota"
	"github.com/billkit/billkit/webhook/webhooktest"
)

// clock is a fake clock, safe for concurrent use.
type clock = fakeclock.Clock

// stripeCall is one request that reached stripe-mock.
type stripeCall struct {
	Method, Path string
	Form         url.Values
}

// recordingProxy forwards to stripe-mock and records every request.
type recordingProxy struct {
	mu    sync.Mutex
	calls []stripeCall
}

func (p *recordingProxy) record(r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	form, _ := url.ParseQuery(string(body))
	p.mu.Lock()
	p.calls = append(p.calls, stripeCall{Method: r.Method, Path: r.URL.Path, Form: form})
	p.mu.Unlock()
}

// find returns the recorded calls to method and a path with prefix and
// suffix.
func (p *recordingProxy) find(method, prefix, suffix string) []stripeCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []stripeCall
	for _, c := range p.calls {
		if c.Method == method && strings.HasPrefix(c.Path, prefix) && strings.HasSuffix(c.Path, suffix) {
			out = append(out, c)
		}
	}
	return out
}

func startStripe(t *testing.T) (*recordingProxy, string) {
	t.Helper()
	mock := testserver.StartStripeMock(t, testserver.StripeMockUsageRecords)
	target, err := url.Parse(mock.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := &recordingProxy{}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rp.record(r)
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return rp, srv.URL
}

// testClient calls the server under test.
type testClient struct {
	t      *testing.T
	base   string
	key    string
	secret string
	clock  *clock
	sub    demo.Subscription
}

type response struct {
	Code   int
	Header http.Header
	Body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("body %q: %v", r.Body, err)
	}
	return m
}

func (c *testClient) do(method, path string, body []byte, header map[string]string) response {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, b}
}

func (c *testClient) authed(method, path string, body []byte) response {
	c.t.Helper()
	h := map[string]string{"Authorization": "Bearer " + c.key}
	if body != nil {
		h["Content-Type"] = "application/json"
	}
	return c.do(method, path, body, h)
}

// send delivers a signed lifecycle event of kind, created one minute after
// the previous one, and wants 200.
func (c *testClient) send(kind string) {
	c.t.Helper()
	c.clock.Add(time.Minute)
	now := c.clock.Now()
	typ, obj, err := demo.Event(kind, c.sub, now)
	if err != nil {
		c.t.Fatal(err)
	}
	payload := webhooktest.NewEvent(typ, obj, webhooktest.WithCreated(now))
	r := c.do("POST", "/billing/webhook", payload, map[string]string{
		"Content-Type":              "application/json",
		webhooktest.SignatureHeader: webhooktest.Sign(c.secret, payload, now),
	})
	if r.Code != http.StatusOK {
		c.t.Fatalf("%s: webhook answered %d %s", kind, r.Code, r.Body)
	}
}

// usage returns GET /billing/usage.
func (c *testClient) usage() map[string]any {
	c.t.Helper()
	r := c.authed("GET", "/billing/usage", nil)
	if r.Code != http.StatusOK {
		c.t.Fatalf("GET /billing/usage = %d %s", r.Code, r.Body)
	}
	return r.json(c.t)
}

func (c *testClient) wantUsage(status, plan string, used float64) map[string]any {
	c.t.Helper()
	u := c.usage()
	if u["status"] != status || u["plan"] != plan || u["used"] != used {
		c.t.Fatalf("usage = %v, want status %q plan %q used %v", u, status, plan, used)
	}
	return u
}

// hello calls GET /v1/hello and wants code; for a 402 it also wants the
// problem type.
func (c *testClient) hello(code int, problemType string) response {
	c.t.Helper()
	r := c.authed("GET", "/v1/hello", nil)
	if r.Code != code {
		c.t.Fatalf("GET /v1/hello = %d %s, want %d", r.Code, r.Body, code)
	}
	if problemType != "" {
		if got := r.json(c.t)["type"]; got != problemType {
			c.t.Fatalf("problem type %v, want %s", got, problemType)
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
			c.t.Fatalf("Content-Type %q", ct)
		}
	}
	return r
}

// allowed makes a request that must be allowed with remaining units left
// under policy.
func (c *testClient) allowed(policy string, limit, remaining int) {
	c.t.Helper()
	r := c.hello(http.StatusOK, "")
	wantPolicy := strconv.Quote(policy) + ";q=" + strconv.Itoa(limit) + ";"
	if got := r.Header.Get("RateLimit-Policy"); !strings.HasPrefix(got, wantPolicy) {
		c.t.Fatalf("RateLimit-Policy %q, want prefix %q", got, wantPolicy)
	}
	wantRL := strconv.Quote(policy) + ";r=" + strconv.Itoa(remaining) + ";"
	if got := r.Header.Get("RateLimit"); !strings.HasPrefix(got, wantRL) {
		c.t.Fatalf("RateLimit %q, want prefix %q", got, wantRL)
	}
}

// TestEndToEnd walks a subscription's whole lifecycle through the composed
// server: real handlers, Redis (the embedded miniredis), signed webhook
// events, and stripe-mock behind a recording proxy.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	calls, stripeURL := startStripe(t)

	const (
		key     = "test-key-0123456789abcdef"
		subject = "alice"
		secret  = "whsec_e2e_test_secret"
	)
	cfg, err := ConfigFromEnv(env(map[string]string{
		"STRIPE_SECRET_KEY":     "sk_test_123",
		"STRIPE_API_BASE":       stripeURL,
		"STRIPE_WEBHOOK_SECRET": secret,
		"API_KEYS":              key + ":" + subject,
	}))
	if err != nil {
		t.Fatal(err)
	}
	// Tiny limits: starter allows 3 requests, pro includes 4 and allows 6
	// (2 units of overage, billed on its metered price).
	starter, pro := &cfg.Plans[0], &cfg.Plans[1]
	starter.Included, starter.Soft = 3, 2
	pro.Included, pro.Soft, pro.Hard = 4, 3, 6
	if !pro.Overage || pro.MeteredPriceID != demo.PriceProMetered {
		t.Fatalf("demo pro plan: %+v", pro)
	}

	clk := fakeclock.New(time.Date(2026, 11, 3, 9, 0, 0, 0, time.UTC))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	app, err := newApp(context.Background(), cfg, log, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	srv := httptest.NewServer(app.Handler())
	t.Cleanup(srv.Close)

	c := &testClient{t: t, base: srv.URL, key: key, secret: secret, clock: clk, sub: demo.Subscription{
		Subject: subject, Tier: "pro", PriceID: pro.PriceID, MeteredPriceID: pro.MeteredPriceID,
	}}
	periodEnd := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

	// No plan: denied, nothing counted.
	c.hello(http.StatusPaymentRequired, quota.ProblemNoPlan)
	c.wantUsage("none", "", 0)
	if r := c.authed("POST", "/billing/portal", []byte(`{}`)); r.Code != http.StatusConflict {
		t.Errorf("portal without a customer = %d %s, want 409", r.Code, r.Body)
	}

	// Subscribe: a Checkout session for the caller, made in Stripe.
	r := c.authed("POST", "/billing/checkout", []byte(`{"tier":"pro"}`))
	if r.Code != http.StatusOK {
		t.Fatalf("checkout = %d %s", r.Code, r.Body)
	}
	if u, _ := r.json(t)["url"].(string); !strings.HasPrefix(u, "https://") {
		t.Fatalf("checkout answered no URL: %s", r.Body)
	}
	sessions := calls.find("POST", "/v1/checkout/sessions", "")
	if len(sessions) != 1 {
		t.Fatalf("%d checkout sessions created, want 1", len(sessions))
	}
	if f := sessions[0].Form; f.Get("client_reference_id") != subject || f.Get("mode") != "subscription" ||
		f.Get("line_items[0][price]") != pro.PriceID || f.Get("subscription_data[metadata][billkit_subject]") != subject {
		t.Errorf("checkout session params: %v", f)
	}
	if r := c.authed("POST", "/billing/checkout", []byte(`{"tier":"enterprise"}`)); r.Code != http.StatusBadRequest {
		t.Errorf("checkout of an unknown tier = %d, want 400", r.Code)
	}

	// The lifecycle events Stripe sends after payment.
	c.send(demo.CheckoutCompleted)
	c.wantUsage("pending", "provisional", 0)
	c.send(demo.SubscriptionCreated)
	c.send(demo.InvoicePaid)
	u := c.wantUsage("active", "pro", 0)
	if u["limit"] != 6.0 || u["remaining"] != 6.0 || u["included"] != 4.0 || u["reset"] != periodEnd.Format(time.RFC3339) {
		t.Errorf("usage = %v", u)
	}
	if r := c.authed("POST", "/billing/portal", []byte(`{}`)); r.Code != http.StatusOK {
		t.Errorf("portal of a customer = %d %s, want 200", r.Code, r.Body)
	} else if f := calls.find("POST", "/v1/billing_portal/sessions", ""); len(f) != 1 || f[0].Form.Get("customer") != "cus_demo_alice" {
		t.Errorf("portal sessions: %v", f)
	}

	// Active pro: requests are counted.
	c.allowed("pro", 6, 5)
	c.allowed("pro", 6, 4)
	// Unknown paths and methods are not metered.
	if r := c.authed("GET", "/v1/nope", nil); r.Code != http.StatusNotFound {
		t.Errorf("GET /v1/nope = %d, want 404", r.Code)
	}
	if r := c.authed("POST", "/v1/hello", nil); r.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /v1/hello = %d, want 405", r.Code)
	}
	c.wantUsage("active", "pro", 2)

	// Payment failed: the grace policy gives starter's limits for a week.
	c.send(demo.PaymentFailed)
	u = c.wantUsage("past_due", "starter", 2)
	graceUntil := clk.Now().Add(gracePeriod).UTC().Format(time.RFC3339)
	if u["grace_until"] != graceUntil || u["limit"] != 3.0 || u["remaining"] != 1.0 {
		t.Errorf("usage in grace = %v, want grace until %s", u, graceUntil)
	}
	c.allowed("starter", 3, 0)
	c.hello(http.StatusPaymentRequired, quota.ProblemQuotaExceeded)

	// The grace period ends: no plan.
	clk.Add(gracePeriod)
	c.hello(http.StatusPaymentRequired, quota.ProblemNoPlan)
	c.wantUsage("past_due", "", 3)

	// Invoice paid: pro is restored, up to its hard limit.
	c.send(demo.InvoicePaid)
	c.wantUsage("active", "pro", 3)
	c.allowed("pro", 6, 2)
	c.allowed("pro", 6, 1)
	c.allowed("pro", 6, 0)
	r = c.hello(http.StatusPaymentRequired, quota.ProblemQuotaExceeded)
	if got, want := r.Header.Get("Retry-After"), strconv.Itoa(int(periodEnd.Sub(clk.Now())/time.Second)); got != want {
		t.Errorf("Retry-After %q, want %q (seconds to the period's end)", got, want)
	}
	if !strings.HasPrefix(r.Header.Get("RateLimit"), `"pro";r=0;`) || !strings.HasPrefix(r.Header.Get("RateLimit-Policy"), `"pro";q=6;`) {
		t.Errorf("402 RateLimit fields: %q %q", r.Header.Get("RateLimit"), r.Header.Get("RateLimit-Policy"))
	}
	if b := r.json(t); b["limit"] != 6.0 || b["used"] != 6.0 {
		t.Errorf("402 body: %s", r.Body)
	}
	c.wantUsage("active", "pro", 6)

	// Usage reaches Stripe: invoice.created flushes the subject's usage,
	// the 6 allowed requests (the denied ones are not billable).
	c.send(demo.InvoiceCreated)
	records := calls.find("POST", "/v1/subscription_items/"+c.sub.ItemID("metered")+"/", "/usage_records")
	if len(records) == 0 {
		t.Fatalf("no usage record reached Stripe; calls: %v", calls.calls)
	}
	last := records[len(records)-1].Form
	if last.Get("quantity") != "6" || last.Get("action") != "set" {
		t.Errorf("usage record %v, want quantity 6 with action set", last)
	}
	// A second pass has nothing new to report.
	n := len(calls.find("POST", "/v1/subscription_items/", "/usage_records"))
	if err := app.reporter.ReportAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := len(calls.find("POST", "/v1/subscription_items/", "/usage_records")); got != n {
		t.Errorf("a pass with nothing new sent %d usage records", got-n)
	}

	// Subscription deleted: denied.
	c.send(demo.SubscriptionDeleted)
	c.hello(http.StatusPaymentRequired, quota.ProblemNoPlan)
	c.wantUsage("canceled", "", 6)
}

// testWriter writes to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// demoSub is the demo pro subscription of subject.
func demoSub(subject string) demo.Subscription {
	return demo.Subscription{Subject: subject, Tier: "pro", PriceID: demo.PricePro, MeteredPriceID: demo.PriceProMetered}
}
