package app

import (
	"bytes"
	"context"
	"encoding/json"
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

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/examples/server/internal/demo"
	"github.com/billkit/billkit/internal/fakeclock"
	"github.com/billkit/billkit/internal/testserver"
	"github.com/billkit/billkit/quota"
	"github.com/billkit/billkit/webhook/webhooktest"
)

// clock is a fake clock, safe for concurrent use.
type clock = fakeclock.Clock

// stripeCall is one request that reached stripe-mock.
type stripeCall struct {
	Method, Path string
	Header       http.Header
	Query, Form  url.Values
}

// recordingProxy forwards to stripe-mock and records every request.
type recordingProxy struct {
	mu      sync.Mutex
	calls   []stripeCall
	changed chan struct{} // closed and replaced by every call
}

func (p *recordingProxy) record(r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	form, _ := url.ParseQuery(string(body))
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, stripeCall{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Query: r.URL.Query(), Form: form})
	if p.changed != nil {
		close(p.changed)
	}
	p.changed = make(chan struct{})
}

// find returns the recorded calls to method and a path with prefix and
// suffix.
func (p *recordingProxy) find(method, prefix, suffix string) []stripeCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.findLocked(method, prefix, suffix)
}

func (p *recordingProxy) findLocked(method, prefix, suffix string) []stripeCall {
	var out []stripeCall
	for _, c := range p.calls {
		if c.Method == method && strings.HasPrefix(c.Path, prefix) && strings.HasSuffix(c.Path, suffix) {
			out = append(out, c)
		}
	}
	return out
}

// waitFor waits until n calls to method and path have been recorded, and
// returns them. It fails t after a minute.
func (p *recordingProxy) waitFor(t *testing.T, n int, method, path string) []stripeCall {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		p.mu.Lock()
		got := p.findLocked(method, path, "")
		if p.changed == nil {
			p.changed = make(chan struct{})
		}
		changed := p.changed
		p.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("%d calls to %s %s within a minute, want %d", len(got), method, path, n)
		}
	}
}

// startStripe starts stripe-mock of version behind a recording proxy. It
// returns the proxy, its URL (the server's STRIPE_API_BASE) and
// stripe-mock's own URL (for fixtures, not recorded).
func startStripe(t *testing.T, version string) (calls *recordingProxy, proxyURL, mockURL string) {
	t.Helper()
	mock := testserver.StartStripeMock(t, version)
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
	return rp, srv.URL, mock.URL
}

// testClient calls the server under test.
type testClient struct {
	t      *testing.T
	base   string
	key    string
	secret string
	clock  *clock
	sub    demo.Subscription
	// shape renders the events; nil means demo.Event's objects, in
	// stripe-go's API version.
	shape *shape
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
	build, opts := demo.Event, []webhooktest.EventOption{webhooktest.WithCreated(now)}
	if c.shape != nil {
		build = c.shape.event
		opts = append(opts, webhooktest.WithAPIVersion(c.shape.APIVersion))
	}
	typ, obj, err := build(kind, c.sub, now)
	if err != nil {
		c.t.Fatal(err)
	}
	payload := webhooktest.NewEvent(typ, obj, opts...)
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

// complete calls POST /v1/complete with body and wants code; for a
// problem it also wants the problem type, when given.
func (c *testClient) complete(body string, code int, problemType string) response {
	c.t.Helper()
	return c.want(c.authed("POST", "/v1/complete", []byte(body)), code, problemType)
}

// export calls GET /v1/export and wants code; for a problem it also wants
// the problem type, when given.
func (c *testClient) export(code int, problemType string) response {
	c.t.Helper()
	return c.want(c.authed("GET", "/v1/export", nil), code, problemType)
}

// want checks that r has code and, unless it is 200, is a problem of
// problemType (when given).
func (c *testClient) want(r response, code int, problemType string) response {
	c.t.Helper()
	if r.Code != code {
		c.t.Fatalf("%d %s, want %d", r.Code, r.Body, code)
	}
	if code == http.StatusOK {
		return r
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		c.t.Fatalf("Content-Type %q of %d %s", ct, r.Code, r.Body)
	}
	if got := r.json(c.t)["type"]; problemType != "" && got != problemType {
		c.t.Fatalf("problem type %v, want %s", got, problemType)
	}
	return r
}

// wantRateLimit checks that h's RateLimit-Policy and RateLimit fields have
// a member for policy with limit and remaining units.
func wantRateLimit(t *testing.T, h http.Header, policy string, limit, remaining int) {
	t.Helper()
	member := func(field string) string {
		for _, m := range strings.Split(h.Get(field), ",") {
			if m = strings.TrimSpace(m); strings.HasPrefix(m, strconv.Quote(policy)+";") {
				return m
			}
		}
		return ""
	}
	if got, want := member("RateLimit-Policy"), strconv.Quote(policy)+";q="+strconv.Itoa(limit)+";"; !strings.HasPrefix(got, want) {
		t.Errorf("RateLimit-Policy %q: member %q, want prefix %q", h.Get("RateLimit-Policy"), got, want)
	}
	if got, want := member("RateLimit"), strconv.Quote(policy)+";r="+strconv.Itoa(remaining)+";"; !strings.HasPrefix(got, want) {
		t.Errorf("RateLimit %q: member %q, want prefix %q", h.Get("RateLimit"), got, want)
	}
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
// server in its default configuration (the demo plans, whose pro tier
// bills through a billing meter): real handlers, Redis (the embedded
// miniredis), signed webhook events in the newest shape (stripe-mock
// v0.203.0's own fixtures, API version 2026-08-26.dahlia), a fake clock,
// and stripe-mock v0.203.0 behind a recording proxy, which receives the
// Checkout and portal sessions and the usage as meter events.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	walkLifecycle(t, lifecycleRun{
		stripeMock: testserver.StripeMockMeterEvents,
		apiVersion: apiDahlia,
		checkPlan: func(t *testing.T, pro billing.Plan) {
			if m := meterOf(pro, quota.DefaultMeter); !m.Overage || m.MeterEventName != demoMeterEvent || m.MeteredPriceID != demo.PriceProMetered {
				t.Fatalf("demo pro plan %+v, want overage of requests billed under meter event %s", pro, demoMeterEvent)
			}
			if m := meterOf(pro, tokensMeter); !m.Overage || m.MeterEventName != demoTokensMeterEvent {
				t.Fatalf("demo pro plan %+v, want overage of tokens billed under meter event %s", pro, demoTokensMeterEvent)
			}
		},
		reports: wantMeterEvents,
	})
}

// TestEndToEndUsageRecords walks the same lifecycle for an account pinned
// to an API version before 2025-03-31.basil: its own prices with a legacy
// metered price (PRICE_PRO_METERED and no meter event name), events in the
// 2023-10-16 shape (stripe-mock v0.162.0's own fixtures), and the usage
// reported as usage records to stripe-mock v0.162.0, the last version that
// has them.
func TestEndToEndUsageRecords(t *testing.T) {
	t.Parallel()
	const metered = "price_1PinnedProMetered"
	walkLifecycle(t, lifecycleRun{
		stripeMock: testserver.StripeMockUsageRecords,
		apiVersion: apiV76,
		env:        map[string]string{"PRICE_STARTER": "price_1PinnedStarter", "PRICE_PRO": "price_1PinnedPro", "PRICE_PRO_METERED": metered},
		checkPlan: func(t *testing.T, pro billing.Plan) {
			if m := meterOf(pro, quota.DefaultMeter); !m.Overage || m.MeterEventName != "" || m.MeteredPriceID != metered {
				t.Fatalf("pro plan %+v, want overage of requests billed under the metered price %s", pro, metered)
			}
			// Nothing bills tokens: the price includes them, up to the cap.
			if m := meterOf(pro, tokensMeter); m.Overage || m.MeterEventName != "" || m.MeteredPriceID != "" {
				t.Fatalf("pro plan %+v, want tokens without overage or billing", pro)
			}
		},
		reports: wantUsageRecords,
	})
}

// lifecycleRun is one way of walking the lifecycle: an account's API
// version and billing model.
type lifecycleRun struct {
	// stripeMock is the stripe-mock version the server calls; its fixtures
	// render the events, in apiVersion.
	stripeMock, apiVersion string
	// env is added to the server's environment.
	env map[string]string
	// checkPlan checks the configured pro plan.
	checkPlan func(t *testing.T, pro billing.Plan)
	// reports checks that what reached Stripe bills the requests and
	// tokens used in sub's current period (the tokens where the plan
	// bills them), and returns the number of Stripe calls that carried
	// them.
	reports func(t *testing.T, calls *recordingProxy, sub demo.Subscription, requests, tokens int) int
}

// walkLifecycle walks a pro subscription from checkout to cancellation:
// no plan, checkout, payment, metered requests (a completion, whose tokens
// are settled after the reply, and the export, a feature of pro), a failed
// payment and its grace period, a paid invoice, the hard limit, usage
// reported on invoice.created, and the deletion.
func walkLifecycle(t *testing.T, run lifecycleRun) {
	t.Helper()
	calls, stripeURL, mockURL := startStripe(t, run.stripeMock)
	sh := loadShape(t, mockURL, run.apiVersion)

	const (
		key     = "test-key-0123456789abcdef"
		subject = "alice"
		secret  = "whsec_e2e_test_secret"
	)
	environ := map[string]string{
		"STRIPE_SECRET_KEY":     "sk_test_123",
		"STRIPE_API_BASE":       stripeURL,
		"STRIPE_WEBHOOK_SECRET": secret,
		"API_KEYS":              key + ":" + subject,
		// Tiny limits: starter allows 3 requests, pro includes 4 and
		// allows 6 (2 units of overage, billed through the plan's meter
		// or metered price).
		"PLAN_STARTER_INCLUDED": "3",
		"PLAN_STARTER_SOFT":     "2",
		"PLAN_PRO_INCLUDED":     "4",
		"PLAN_PRO_SOFT":         "3",
		"PLAN_PRO_HARD":         "6",
	}
	for k, v := range run.env {
		environ[k] = v
	}
	cfg, err := ConfigFromEnv(env(environ))
	if err != nil {
		t.Fatal(err)
	}
	_, pro := starterPro(t, cfg)
	run.checkPlan(t, pro)

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

	proMetered := meterOf(pro, quota.DefaultMeter).MeteredPriceID
	sub := demo.Subscription{Subject: subject, Tier: "pro", PriceID: pro.PriceID, MeteredPriceID: proMetered}.WithDefaults(clk.Now())
	wantShape(t, sh, sub, clk.Now())
	c := &testClient{t: t, base: srv.URL, key: key, secret: secret, clock: clk, sub: sub, shape: &sh}
	periodEnd := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

	// No plan: denied, nothing counted.
	c.hello(http.StatusPaymentRequired, quota.ProblemNoPlan)
	c.complete(`{"prompt":"hello"}`, http.StatusPaymentRequired, quota.ProblemNoPlan)
	c.export(http.StatusPaymentRequired, quota.ProblemNoPlan)
	c.wantUsage("none", "", 0)
	if r := c.authed("POST", "/billing/portal", []byte(`{}`)); r.Code != http.StatusConflict {
		t.Errorf("portal without a customer = %d %s, want 409", r.Code, r.Body)
	}

	// Subscribe: a Checkout session for the caller, made in Stripe, with
	// the tier's price and its metered price.
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
		f.Get("line_items[0][price]") != pro.PriceID || f.Get("line_items[1][price]") != proMetered ||
		f.Get("subscription_data[metadata][billkit_subject]") != subject {
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
	} else if f := calls.find("POST", "/v1/billing_portal/sessions", ""); len(f) != 1 || f[0].Form.Get("customer") != sub.Customer {
		t.Errorf("portal sessions: %v", f)
	}

	// Active pro: requests are counted. A completion counts as a request
	// and reserves its most tokens (its 3 prompt tokens and the 256 of
	// max_tokens' default) in the same decision, so that both meters are
	// in its RateLimit fields; it settles what it used, 3 + 24.
	r = c.complete(`{"prompt":"three token prompt"}`, http.StatusOK, "")
	const tokens = 3 + 8*3
	if got := r.json(t)["usage"].(map[string]any)["total_tokens"]; got != float64(tokens) {
		t.Errorf("completion used %v tokens, want %d", got, tokens)
	}
	wantRateLimit(t, r.Header, "requests", 6, 5)
	tokenCap := int(pro.Limits(tokensMeter, quota.Period{}).Limit()) // with overage: its hard limit
	wantRateLimit(t, r.Header, "tokens", tokenCap, tokenCap-(3+defaultMaxTokens))
	// The settle runs after the response, in the background: wait for it
	// before the export reads the counters.
	app.closeMeters()
	// The export is a feature of pro (and a request).
	if r := c.export(http.StatusOK, ""); !strings.Contains(string(r.Body), "\nalice,pro,tokens,"+strconv.Itoa(tokens)+",0,") {
		t.Errorf("export:\n%s\nwant alice's %d tokens", r.Body, tokens)
	}
	c.allowed("pro", 6, 3)
	// Unknown paths and methods are not metered.
	if r := c.authed("GET", "/v1/nope", nil); r.Code != http.StatusNotFound {
		t.Errorf("GET /v1/nope = %d, want 404", r.Code)
	}
	if r := c.authed("POST", "/v1/hello", nil); r.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /v1/hello = %d, want 405", r.Code)
	}
	c.wantUsage("active", "pro", 3)

	// Payment failed: the grace policy gives starter's limits for a week,
	// which starter's 3 requests are used up by (a completion is refused
	// for its requests), and no export.
	c.send(demo.PaymentFailed)
	u = c.wantUsage("past_due", "starter", 3)
	graceUntil := clk.Now().Add(gracePeriod).UTC().Format(time.RFC3339)
	if u["grace_until"] != graceUntil || u["limit"] != 3.0 || u["remaining"] != 0.0 {
		t.Errorf("usage in grace = %v, want grace until %s", u, graceUntil)
	}
	c.hello(http.StatusPaymentRequired, quota.ProblemQuotaExceeded)
	if b := c.complete(`{"prompt":"hello"}`, http.StatusPaymentRequired, quota.ProblemQuotaExceeded).json(t); b["meter"] != "requests" {
		t.Errorf("402 of a completion over the requests limit names meter %v, want requests", b["meter"])
	}
	c.export(http.StatusForbidden, "")

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
	// the 6 allowed requests (the denied ones are not billable) and the
	// tokens settled.
	app.closeMeters() // the settles have landed (they did long ago)
	c.send(demo.InvoiceCreated)
	n := run.reports(t, calls, sub, 6, tokens)
	// A pass has nothing new to report.
	if err := app.reporter.ReportAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := run.reports(t, calls, sub, 6, tokens); got != n {
		t.Errorf("a pass with nothing new made %d more reports", got-n)
	}
	if st := app.reporter.Stats(); st.Reports != uint64(n) || st.Failures != 0 || st.RateLimited != 0 ||
		st.Passes != 1 || st.Subjects != 1 || st.Failed != 0 || st.Pending != 0 || st.Unbillable != 0 {
		t.Errorf("reporter stats %+v, want %d reports, then a pass over 1 subject without failures", st, n)
	}

	// Subscription deleted: denied.
	c.send(demo.SubscriptionDeleted)
	c.hello(http.StatusPaymentRequired, quota.ProblemNoPlan)
	c.export(http.StatusPaymentRequired, quota.ProblemNoPlan)
	c.wantUsage("canceled", "", 6)
	if n := app.eventErrors.Load(); n != 0 {
		t.Errorf("the lifecycle refused or dropped %d events", n)
	}
}

// wantShape checks that sh renders the subscription's period, the
// invoice's subscription and the lines' prices where its API version has
// them, so that a walk in the newest shape cannot pass in an older one.
func wantShape(t *testing.T, sh shape, s demo.Subscription, now time.Time) {
	t.Helper()
	_, subObj, err := sh.event(demo.SubscriptionCreated, s, now)
	if err != nil {
		t.Fatal(err)
	}
	_, invObj, err := sh.event(demo.InvoicePaid, s, now)
	if err != nil {
		t.Fatal(err)
	}
	item := firstOf(subObj, "items")
	line := firstOf(invObj, "lines")
	old := sh.APIVersion == apiV76
	for _, c := range []struct {
		field     string
		got, want bool
	}{
		{"subscription.current_period_start", has(subObj, "current_period_start"), old},
		{"subscription.items.data[].current_period_start", has(item, "current_period_start"), !old},
		{"invoice.subscription", has(invObj, "subscription"), old},
		{"invoice.parent", has(invObj, "parent"), !old},
		{"invoice.lines.data[].price", has(line, "price"), old},
		{"invoice.lines.data[].pricing", has(line, "pricing"), !old},
	} {
		if c.got != c.want {
			t.Errorf("API version %s: %s present %v, want %v", sh.APIVersion, c.field, c.got, c.want)
		}
	}
}

// wantMeterEvents checks that the used requests and tokens reached Stripe
// as meter events of the demo meters and sub's customer, each under its
// own identifier, also its Idempotency-Key, timestamped within the period;
// and that no usage record was sent.
func wantMeterEvents(t *testing.T, calls *recordingProxy, sub demo.Subscription, requests, tokens int) int {
	t.Helper()
	if r := calls.find("POST", "/v1/subscription_items/", "/usage_records"); len(r) > 0 {
		t.Errorf("%d usage records sent for a plan billed through a meter", len(r))
	}
	events := calls.find("POST", "/v1/billing/meter_events", "")
	if len(events) == 0 {
		t.Fatal("no meter event reached Stripe")
	}
	seen := map[string]bool{}
	sum := map[string]int{}
	for _, e := range events {
		f := e.Form
		id := f.Get("identifier")
		if name := f.Get("event_name"); (name != demoMeterEvent && name != demoTokensMeterEvent) || f.Get("payload[stripe_customer_id]") != sub.Customer ||
			id == "" || seen[id] || e.Header.Get("Idempotency-Key") != id {
			t.Errorf("meter event %v with Idempotency-Key %q, want event %s or %s of customer %s under a new identifier that is also the Idempotency-Key",
				f, e.Header.Get("Idempotency-Key"), demoMeterEvent, demoTokensMeterEvent, sub.Customer)
		}
		seen[id] = true
		v, err := strconv.Atoi(f.Get("payload[value]"))
		if err != nil || v <= 0 {
			t.Errorf("meter event value %q, want a positive integer", f.Get("payload[value]"))
		}
		sum[f.Get("event_name")] += v
		if ts, _ := strconv.ParseInt(f.Get("timestamp"), 10, 64); ts < sub.PeriodStart.Unix() || ts >= sub.PeriodEnd.Unix() {
			t.Errorf("meter event timestamp %d outside the period [%d, %d)", ts, sub.PeriodStart.Unix(), sub.PeriodEnd.Unix())
		}
	}
	if sum[demoMeterEvent] != requests || sum[demoTokensMeterEvent] != tokens {
		t.Errorf("meter events carry %d requests and %d tokens, want %d and %d", sum[demoMeterEvent], sum[demoTokensMeterEvent], requests, tokens)
	}
	return len(events)
}

// wantUsageRecords checks that the used requests reached Stripe as a usage
// record setting the period's total on the subscription item of the
// metered price; and that no meter event was sent (the plan bills no
// tokens).
func wantUsageRecords(t *testing.T, calls *recordingProxy, sub demo.Subscription, used, _ int) int {
	t.Helper()
	if ev := calls.find("POST", "/v1/billing/meter_events", ""); len(ev) > 0 {
		t.Errorf("%d meter events sent for a plan billed through usage records", len(ev))
	}
	records := calls.find("POST", "/v1/subscription_items/", "/usage_records")
	if len(records) == 0 {
		t.Fatal("no usage record reached Stripe")
	}
	for _, r := range records {
		if want := "/v1/subscription_items/" + sub.ItemID("metered") + "/usage_records"; r.Path != want {
			t.Errorf("usage record to %s, want %s", r.Path, want)
		}
	}
	if last := records[len(records)-1].Form; last.Get("quantity") != strconv.Itoa(used) || last.Get("action") != "set" {
		t.Errorf("usage record %v, want quantity %d with action set", last, used)
	}
	return len(records)
}

// TestRunReconciles checks that the server reconciles its entitlements
// with Stripe at start and then every RECONCILE_INTERVAL (each pass lists
// the subscriptions of stripe-mock v0.203.0), and that it stops doing so
// when it shuts down.
func TestRunReconciles(t *testing.T) {
	t.Parallel()
	calls, stripeURL, _ := startStripe(t, testserver.StripeMockMeterEvents)
	var logs syncBuffer
	_, _, stop := startRunOutput(t, map[string]string{
		"STRIPE_SECRET_KEY":  "sk_test_123",
		"STRIPE_API_BASE":    stripeURL,
		"RECONCILE_INTERVAL": "50ms",
	}, &logs, io.Discard)
	for _, c := range calls.waitFor(t, 2, "GET", "/v1/subscriptions") {
		if c.Path != "/v1/subscriptions" || c.Query.Get("status") != "all" {
			t.Errorf("reconciliation called GET %s?%s, want a listing of every subscription", c.Path, c.Query.Encode())
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	for _, want := range []string{`"msg":"reconciliation started","interval":"50ms"`, `"msg":"billing: reconciled"`, `"msg":"reconciliation stopped"`} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "reconcile failed") {
		t.Errorf("a reconciliation failed:\n%s", out)
	}
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
