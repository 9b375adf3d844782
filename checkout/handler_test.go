package checkout_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/billkit/billkit/checkout"
	"github.com/billkit/billkit/internal/testserver"
)

// subjectHeader is how the tests' SubjectFunc authenticates: a stand-in for
// a verified session or API key.
const subjectHeader = "X-Test-Subject"

func testSubject(r *http.Request) (string, error) {
	if s := r.Header.Get(subjectHeader); s != "" {
		return s, nil
	}
	return "", errors.New("no credentials")
}

// customers is a CustomerFunc backed by a map; "broken" fails.
func customers(m map[string]string) checkout.CustomerFunc {
	return func(ctx context.Context, subject string) (string, error) {
		if subject == "broken" {
			return "", errors.New("redis: connection refused")
		}
		id, ok := m[subject]
		if !ok {
			return "", fmt.Errorf("lookup %s: %w", subject, checkout.ErrNoCustomer)
		}
		return id, nil
	}
}

func newHandler(t testing.TB, cfg checkout.Config, edit func(*checkout.HandlerConfig)) *checkout.Handler {
	return newHandlerFor(t, newSessions(t, cfg), edit)
}

func newHandlerFor(t testing.TB, s *checkout.Sessions, edit func(*checkout.HandlerConfig)) *checkout.Handler {
	hc := checkout.HandlerConfig{
		Sessions: s,
		Subject:  testSubject,
		Customer: customers(map[string]string{"carol": "cus_carol"}),
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if edit != nil {
		edit(&hc)
	}
	h, err := checkout.NewHandler(hc)
	if err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	return h
}

type problemBody struct {
	Type            string   `json:"type"`
	Title           string   `json:"title"`
	Status          int      `json:"status"`
	Detail          string   `json:"detail"`
	ValidTiers      []string `json:"valid_tiers"`
	StripeRequestID string   `json:"stripe_request_id"`
}

// call is one request to a Handler, through its ServeHTTP: path is the
// endpoint under /billing/, "checkout" when empty.
type call struct {
	method, path, subject, contentType, body, key string
	chunked                                       bool
}

func (c call) do(h http.Handler) *httptest.ResponseRecorder {
	method := c.method
	if method == "" {
		method = http.MethodPost
	}
	var body io.Reader = strings.NewReader(c.body)
	if c.chunked {
		body = io.MultiReader(strings.NewReader(c.body)) // unknown length
	}
	path := c.path
	if path == "" {
		path = "checkout"
	}
	r := httptest.NewRequest(method, "/billing/"+path, body)
	if c.chunked {
		r.ContentLength = -1
	}
	if c.subject != "" {
		r.Header.Set(subjectHeader, c.subject)
	}
	ct := c.contentType
	if ct == "" {
		ct = "application/json"
	}
	if ct != "-" {
		r.Header.Set("Content-Type", ct)
	}
	if c.key != "" {
		r.Header.Set(checkout.IdempotencyHeader, c.key)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// TestHandlerErrors covers every error status of both endpoints, checks
// the problem+json body, and that Stripe was called only when it should be
// (C1, C3).
func TestHandlerErrors(t *testing.T) {
	t.Parallel()
	const stripeMsg = "No such price: 'price_pro456'; contact acct_1SECRET"
	tests := []struct {
		name        string
		call        call
		stripe      func(n int, w http.ResponseWriter, r *http.Request)
		timeout     time.Duration
		edit        func(*checkout.HandlerConfig)
		want        int
		wantStripe  int
		wantDetail  string
		wantTiers   bool
		wantReqID   string
		wantHeaders map[string]string
	}{
		{name: "GET checkout", call: call{method: http.MethodGet, subject: "alice"}, want: 405, wantHeaders: map[string]string{"Allow": "POST"}},
		{name: "PUT portal", call: call{method: http.MethodPut, path: "portal", subject: "carol"}, want: 405, wantHeaders: map[string]string{"Allow": "POST"}},
		{name: "no subject", call: call{body: `{"tier":"pro"}`}, want: 401},
		{name: "no subject portal", call: call{path: "portal"}, want: 401},
		{name: "text/plain", call: call{subject: "alice", contentType: "text/plain", body: `{"tier":"pro"}`}, want: 415},
		{name: "no content type", call: call{subject: "alice", contentType: "-", body: `{"tier":"pro"}`}, want: 415},
		{name: "form body", call: call{subject: "alice", contentType: "application/x-www-form-urlencoded", body: "tier=pro"}, want: 415},
		{name: "json with charset", call: call{subject: "alice", contentType: "application/json; charset=utf-8", body: `{"tier":"pro"}`}, want: 200, wantStripe: 1},
		{name: "body over limit", call: call{subject: "alice", body: `{"tier":"pro","email":"` + strings.Repeat("a", 300) + `@example.com"}`},
			edit: func(c *checkout.HandlerConfig) { c.MaxBodyBytes = 256 }, want: 413},
		{name: "chunked body over limit", call: call{subject: "alice", chunked: true, body: `{"tier":"pro","email":"` + strings.Repeat("a", 300) + `@example.com"}`},
			edit: func(c *checkout.HandlerConfig) { c.MaxBodyBytes = 256 }, want: 413},
		{name: "padding over limit after the object", call: call{subject: "alice", chunked: true, body: `{"tier":"pro"}` + strings.Repeat(" ", 300)},
			edit: func(c *checkout.HandlerConfig) { c.MaxBodyBytes = 256 }, want: 413},
		{name: "portal body over limit", call: call{path: "portal", subject: "carol", body: `{"x":"` + strings.Repeat("a", 300) + `"}`},
			edit: func(c *checkout.HandlerConfig) { c.MaxBodyBytes = 256 }, want: 413},
		{name: "malformed JSON", call: call{subject: "alice", body: `{"tier":`}, want: 400},
		{name: "JSON array", call: call{subject: "alice", body: `["pro"]`}, want: 400},
		{name: "empty body", call: call{subject: "alice"}, want: 400},
		{name: "trailing data", call: call{subject: "alice", body: `{"tier":"pro"}{"tier":"starter"}`}, want: 400},
		{name: "subject in body", call: call{subject: "alice", body: `{"tier":"pro","subject":"mallory"}`}, want: 400, wantDetail: `unknown field "subject"`},
		{name: "tier not a string", call: call{subject: "alice", body: `{"tier":7}`}, want: 400},
		{name: "missing tier", call: call{subject: "alice", body: `{}`}, want: 400, wantDetail: "valid tiers: pro, starter", wantTiers: true},
		{name: "unknown tier", call: call{subject: "alice", body: `{"tier":"gold"}`}, want: 400, wantDetail: `unknown tier "gold"; valid tiers: pro, starter`, wantTiers: true},
		{name: "bad email", call: call{subject: "alice", body: `{"tier":"pro","email":"nope"}`}, want: 400, wantDetail: "email"},
		{name: "bad idempotency key", call: call{subject: "alice", body: `{"tier":"pro"}`, key: "has space"}, want: 400, wantDetail: "Idempotency-Key"},
		{name: "long idempotency key", call: call{subject: "alice", body: `{"tier":"pro"}`, key: strings.Repeat("k", 256)}, want: 400, wantDetail: "Idempotency-Key"},
		{name: "portal malformed JSON", call: call{path: "portal", subject: "carol", body: `{`}, want: 400},
		{name: "portal text body", call: call{path: "portal", subject: "carol", contentType: "text/plain", body: `hi`}, want: 415},
		{name: "portal no customer", call: call{path: "portal", subject: "alice"}, want: 409},
		{name: "portal lookup fails", call: call{path: "portal", subject: "broken"}, want: 503},
		{name: "checkout lookup fails", call: call{subject: "broken", body: `{"tier":"pro"}`}, want: 503},
		{name: "portal without CustomerFunc", call: call{path: "portal", subject: "carol"},
			edit: func(c *checkout.HandlerConfig) { c.Customer = nil }, want: 503},
		{name: "card error", call: call{subject: "alice", body: `{"tier":"pro"}`}, want: 502, wantStripe: 1, wantReqID: "req_card",
			stripe: func(n int, w http.ResponseWriter, r *http.Request) {
				stripeError(w, http.StatusPaymentRequired, "req_card", "card_error", "card_declined", stripeMsg)
			}},
		{name: "invalid request error", call: call{subject: "alice", body: `{"tier":"pro"}`}, want: 502, wantStripe: 1, wantReqID: "req_inv",
			stripe: func(n int, w http.ResponseWriter, r *http.Request) {
				stripeError(w, http.StatusBadRequest, "req_inv", "invalid_request_error", "resource_missing", stripeMsg)
			}},
		{name: "portal invalid request error", call: call{path: "portal", subject: "carol"}, want: 502, wantStripe: 1, wantReqID: "req_pinv",
			stripe: func(n int, w http.ResponseWriter, r *http.Request) {
				stripeError(w, http.StatusBadRequest, "req_pinv", "invalid_request_error", "", stripeMsg)
			}},
		{name: "authentication error", call: call{subject: "alice", body: `{"tier":"pro"}`}, want: 502, wantStripe: 1, wantReqID: "req_auth",
			stripe: func(n int, w http.ResponseWriter, r *http.Request) {
				stripeError(w, http.StatusUnauthorized, "req_auth", "invalid_request_error", "", "Invalid API Key provided: "+testSecretKey)
			}},
		{name: "not JSON from Stripe", call: call{subject: "alice", body: `{"tier":"pro"}`}, want: 502, wantStripe: 1,
			stripe: func(n int, w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusBadGateway)
				io.WriteString(w, "<html>"+stripeMsg+"</html>")
			}},
		{name: "idempotency key reused", call: call{subject: "alice", body: `{"tier":"pro"}`, key: "k1"}, want: 409, wantStripe: 1, wantReqID: "req_idem",
			stripe: func(n int, w http.ResponseWriter, r *http.Request) {
				stripeError(w, http.StatusBadRequest, "req_idem", "idempotency_error", "", stripeMsg)
			}},
		{name: "Stripe too slow", call: call{subject: "alice", body: `{"tier":"pro"}`}, want: 504, wantStripe: 1, timeout: 50 * time.Millisecond,
			stripe: func(n int, w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }},
		{name: "portal Stripe too slow", call: call{path: "portal", subject: "carol"}, want: 504, wantStripe: 1, timeout: 50 * time.Millisecond,
			stripe: func(n int, w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }},
		{name: "checkout ok", call: call{subject: "alice", body: `{"tier":"pro","email":"a@example.com"}`}, want: 200, wantStripe: 1},
		{name: "portal ok, no body", call: call{path: "portal", subject: "carol", contentType: "-"}, want: 200, wantStripe: 1},
		{name: "portal ok, empty object", call: call{path: "portal", subject: "carol", body: `{}`}, want: 200, wantStripe: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeStripe(t, tt.stripe)
			cfg := testConfig(t, newStripeClient(f.URL, 0))
			cfg.Timeout = tt.timeout
			h := newHandler(t, cfg, tt.edit)
			w := tt.call.do(h)

			if w.Code != tt.want {
				t.Fatalf("status = %d, want %d; body %s", w.Code, tt.want, w.Body)
			}
			if n := len(f.all()); tt.timeout > 0 {
				// A short deadline may pass before the request reaches
				// the fake on a loaded machine; it is never retried.
				if n > tt.wantStripe {
					t.Errorf("Stripe got %d requests, want at most %d", n, tt.wantStripe)
				}
			} else if n != tt.wantStripe {
				t.Errorf("Stripe got %d requests, want %d", n, tt.wantStripe)
			}
			for k, v := range tt.wantHeaders {
				if got := w.Header().Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			body := w.Body.String()
			if strings.Contains(body, testSecretKey) || strings.Contains(body, "sk_test") || strings.Contains(body, "SECRET") {
				t.Errorf("the body leaks a secret: %s", body)
			}
			if tt.want == 200 {
				var s struct{ ID, URL string }
				if ct := w.Header().Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q", ct)
				}
				if err := json.Unmarshal(w.Body.Bytes(), &s); err != nil || s.ID == "" || !strings.HasPrefix(s.URL, "https://") {
					t.Errorf("body = %s, want {id, url}", body)
				}
				return
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type = %q, want application/problem+json", ct)
			}
			var p problemBody
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
				t.Fatalf("body %q: %v", body, err)
			}
			if p.Status != tt.want || p.Type == "" || p.Title != http.StatusText(tt.want) || p.Detail == "" {
				t.Errorf("problem = %+v, want status %d with type, title and detail", p, tt.want)
			}
			if !strings.Contains(p.Detail, tt.wantDetail) {
				t.Errorf("detail = %q, want it to contain %q", p.Detail, tt.wantDetail)
			}
			if tt.wantTiers && strings.Join(p.ValidTiers, ",") != "pro,starter" {
				t.Errorf("valid_tiers = %v, want [pro starter]", p.ValidTiers)
			}
			if p.StripeRequestID != tt.wantReqID {
				t.Errorf("stripe_request_id = %q, want %q", p.StripeRequestID, tt.wantReqID)
			}
			if strings.Contains(body, "No such price") || strings.Contains(body, "acct_1") || strings.Contains(body, "<html>") {
				t.Errorf("the body repeats Stripe's message: %s", body)
			}
		})
	}
}

// TestHandlerNotConfigured: a handler without Stripe answers 503 with the
// configured instructions, whatever the request, on every path and through
// each endpoint's own handler.
func TestHandlerNotConfigured(t *testing.T) {
	t.Parallel()
	const detail = "set STRIPE_SECRET_KEY and PRICE_<TIER> to enable checkout"
	h := checkout.NotConfigured(detail)
	if h.Configured() {
		t.Error("Configured() = true")
	}
	for _, hh := range []struct {
		name string
		h    http.Handler
	}{{"Handler", h}, {"Checkout", h.Checkout()}, {"Portal", h.Portal()}} {
		for _, c := range []call{
			{subject: "alice", body: `{"tier":"pro"}`},
			{path: "portal", subject: "carol"},
			{path: "elsewhere", subject: "carol"},
			{method: http.MethodGet},
		} {
			w := c.do(hh.h)
			var p problemBody
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
				t.Errorf("%s %+v: body %q: %v", hh.name, c, w.Body, err)
			}
			if w.Code != 503 || p.Status != 503 || p.Detail != detail || w.Header().Get("Content-Type") != "application/problem+json" {
				t.Errorf("%s %+v: got %d %s, want 503 problem with the instructions", hh.name, c, w.Code, w.Body)
			}
		}
	}
	if p := checkout.NotConfigured(""); p.Configured() {
		t.Error("NotConfigured(\"\").Configured() = true")
	}
}

// TestHandlerIdempotencyKey: the Idempotency-Key header is passed to Stripe
// deterministically per subject and endpoint; without it each request gets
// a fresh key (C3).
func TestHandlerIdempotencyKey(t *testing.T) {
	t.Parallel()
	f := newFakeStripe(t, nil)
	h := newHandler(t, testConfig(t, newStripeClient(f.URL, 0)), nil)
	keyOf := func(c call) string {
		t.Helper()
		before := len(f.all())
		if w := c.do(h); w.Code != 200 {
			t.Fatalf("%+v: status %d %s", c, w.Code, w.Body)
		}
		all := f.all()
		if len(all) != before+1 {
			t.Fatalf("Stripe got %d requests, want 1", len(all)-before)
		}
		return all[len(all)-1].IdempotencyKey
	}
	body := `{"tier":"pro"}`
	a1 := keyOf(call{subject: "alice", body: body, key: "order-1"})
	a2 := keyOf(call{subject: "alice", body: body, key: "order-1"})
	b1 := keyOf(call{subject: "bob", body: body, key: "order-1"})
	a3 := keyOf(call{subject: "alice", body: body, key: "order-2"})
	p1 := keyOf(call{path: "portal", subject: "carol", key: "order-1"})
	c1 := keyOf(call{subject: "carol", body: body, key: "order-1"})
	n1 := keyOf(call{subject: "alice", body: body})
	n2 := keyOf(call{subject: "alice", body: body})

	if a1 == "" || a1 != a2 {
		t.Errorf("same subject, same header: Stripe keys %q, %q; want equal", a1, a2)
	}
	for name, k := range map[string]string{"other subject": b1, "other header": a3, "no header": n1, "portal vs checkout": c1} {
		if k == a1 || k == "" {
			t.Errorf("%s: Stripe key %q, want non-empty and different from %q", name, k, a1)
		}
	}
	if p1 == c1 {
		t.Errorf("portal and checkout share Stripe key %q", p1)
	}
	if n1 == n2 || n1 == "" {
		t.Errorf("no header: keys %q, %q; want two different random keys", n1, n2)
	}
	if strings.Contains(a1, "alice") {
		t.Errorf("Stripe key %q exposes the subject", a1)
	}
}

// TestHandlerRetrySameKey: through the handler, a 503 then 200 is retried
// by stripe-go with the Stripe key derived from the client's header.
func TestHandlerRetrySameKey(t *testing.T) {
	t.Parallel()
	f := newFakeStripe(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 0 {
			w.Header().Set("Stripe-Should-Retry", "true")
			stripeError(w, http.StatusServiceUnavailable, "req_503", "api_error", "", "unavailable")
			return
		}
		okSession(n, w, r)
	})
	h := newHandler(t, testConfig(t, newStripeClient(f.URL, 1)), nil)
	w := call{subject: "alice", body: `{"tier":"pro"}`, key: "order-7"}.do(h)
	if w.Code != 200 {
		t.Fatalf("status %d %s", w.Code, w.Body)
	}
	all := f.all()
	if len(all) != 2 || all[0].IdempotencyKey == "" || all[0].IdempotencyKey != all[1].IdempotencyKey {
		t.Fatalf("requests %d, keys %q; want 2 with one key", len(all), func() []string {
			var k []string
			for _, r := range all {
				k = append(k, r.IdempotencyKey)
			}
			return k
		}())
	}
}

// TestHandlerUsesKnownCustomer: a subject with a Stripe customer checks out
// as that customer (no duplicate customer), and the subject comes from
// authentication.
func TestHandlerUsesKnownCustomer(t *testing.T) {
	t.Parallel()
	f := newFakeStripe(t, nil)
	h := newHandler(t, testConfig(t, newStripeClient(f.URL, 0)), nil)
	if w := (call{subject: "carol", body: `{"tier":"starter","email":"c@example.com"}`}).do(h); w.Code != 200 {
		t.Fatalf("status %d %s", w.Code, w.Body)
	}
	r := f.last(t)
	for k, v := range map[string]string{
		"customer": "cus_carol", "customer_email": "", "client_reference_id": "carol",
		"metadata[billkit_subject]": "carol", "subscription_data[metadata][billkit_subject]": "carol",
		"line_items[0][price]": "price_starter123",
	} {
		if got := r.Form.Get(k); got != v {
			t.Errorf("form %s = %q, want %q", k, got, v)
		}
	}
}

// TestHandlerStripeMock runs both endpoints against stripe-mock.
func TestHandlerStripeMock(t *testing.T) {
	t.Parallel()
	mock := testserver.StartStripeMock(t, testserver.StripeMockUsageRecords)
	proxy, rec := recordingProxy(t, mock.URL)
	h := newHandler(t, testConfig(t, newStripeClient(proxy.URL, 2)), nil)
	mux := http.NewServeMux()
	mux.Handle("/billing/", h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	for _, c := range []struct{ path, subject, body, prefix, stripePath string }{
		{"checkout", "alice", `{"tier":"pro"}`, "cs_", "/v1/checkout/sessions"},
		{"portal", "carol", ``, "bps_", "/v1/billing_portal/sessions"},
	} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/billing/"+c.path, strings.NewReader(c.body))
		req.Header.Set(subjectHeader, c.subject)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(checkout.IdempotencyHeader, "mock-1")
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var s struct{ ID, URL string }
		err = json.NewDecoder(res.Body).Decode(&s)
		res.Body.Close()
		if res.StatusCode != 200 || err != nil || !strings.HasPrefix(s.ID, c.prefix) || s.URL == "" {
			t.Fatalf("%s: %d %+v %v", c.path, res.StatusCode, s, err)
		}
		r := rec.last(t)
		if r.Path != c.stripePath || r.IdempotencyKey == "" {
			t.Errorf("%s: Stripe got %s with key %q", c.path, r.Path, r.IdempotencyKey)
		}
		if c.path == "checkout" && (r.Form.Get("client_reference_id") != "alice" || r.Form.Get("subscription_data[metadata][billkit_subject]") != "alice") {
			t.Errorf("checkout form = %v", r.Form)
		}
		if c.path == "portal" && r.Form.Get("customer") != "cus_carol" {
			t.Errorf("portal form = %v", r.Form)
		}
	}
}

// TestHandlerConfigErrors: NewHandler rejects each invalid field and names
// it.
func TestHandlerConfigErrors(t *testing.T) {
	t.Parallel()
	s := newSessions(t, testConfig(t, newStripeClient("http://127.0.0.1:1", 0)))
	tests := []struct {
		name  string
		cfg   checkout.HandlerConfig
		field string
	}{
		{"no sessions", checkout.HandlerConfig{Subject: testSubject}, "HandlerConfig.Sessions"},
		{"no subject", checkout.HandlerConfig{Sessions: s}, "HandlerConfig.Subject"},
		{"negative limit", checkout.HandlerConfig{Sessions: s, Subject: testSubject, MaxBodyBytes: -1}, "HandlerConfig.MaxBodyBytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := checkout.NewHandler(tt.cfg)
			if h != nil || !errors.Is(err, checkout.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.field) {
				t.Errorf("NewHandler = %v, %v; want ErrInvalidConfig naming %s", h, err, tt.field)
			}
		})
	}
}

// TestHandlerInvalidSubject: a SubjectFunc returning a subject that breaks
// billkit's subject rule (internal/subject) is a server error, on both
// endpoints, and nothing reaches Stripe; the longest valid subject passes.
func TestHandlerInvalidSubject(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, subject string
		want          int
	}{
		{"201 bytes", strings.Repeat("x", 201), 500},
		{"brace", "org{1}", 500},
		{"control character", "a\x01b", 500},
		{"tab", "a\tb", 500},
		{"invalid UTF-8", "a\xffb", 500},
		{"200 bytes", strings.Repeat("x", 200), 200},
	} {
		for _, path := range []string{"checkout", "portal"} {
			t.Run(tt.name+"/"+path, func(t *testing.T) {
				t.Parallel()
				f := newFakeStripe(t, nil)
				h := newHandler(t, testConfig(t, newStripeClient(f.URL, 0)), func(c *checkout.HandlerConfig) {
					c.Subject = func(*http.Request) (string, error) { return tt.subject, nil }
					c.Customer = func(context.Context, string) (string, error) { return "cus_1", nil }
				})
				body := `{"tier":"pro"}`
				if path == "portal" {
					body = `{}`
				}
				w := call{path: path, subject: "ignored", body: body}.do(h)
				wantStripe := 0
				if tt.want == 200 {
					wantStripe = 1
				}
				if w.Code != tt.want || len(f.all()) != wantStripe {
					t.Errorf("status %d, Stripe requests %d; want %d and %d", w.Code, len(f.all()), tt.want, wantStripe)
				}
				if tt.want == 500 && strings.Contains(w.Body.String(), tt.subject) {
					t.Errorf("the body echoes the subject: %s", w.Body)
				}
			})
		}
	}
}

// TestHandlerConcurrent: concurrent duplicate requests (a double-clicked
// button) all reach Stripe with one key, so Stripe answers them with one
// session; the handler is safe for concurrent use (run with -race).
func TestHandlerConcurrent(t *testing.T) {
	t.Parallel()
	f := newFakeStripe(t, nil)
	h := newHandler(t, testConfig(t, newStripeClient(f.URL, 0)), nil)
	const n = 16
	codes := make(chan int, n)
	for i := 0; i < n; i++ {
		go func() {
			codes <- call{subject: "alice", body: `{"tier":"pro"}`, key: "double-click"}.do(h).Code
		}()
	}
	for i := 0; i < n; i++ {
		if c := <-codes; c != 200 {
			t.Errorf("status %d", c)
		}
	}
	all := f.all()
	if len(all) != n {
		t.Fatalf("Stripe got %d requests, want %d", len(all), n)
	}
	for _, r := range all {
		if r.IdempotencyKey != all[0].IdempotencyKey {
			t.Fatalf("keys differ: %q vs %q", r.IdempotencyKey, all[0].IdempotencyKey)
		}
	}
}

// TestHandlerDoesNotMutateRequest: a request without a body (possible when
// the handler is called directly) is answered without changing the
// caller's *http.Request.
func TestHandlerDoesNotMutateRequest(t *testing.T) {
	t.Parallel()
	f := newFakeStripe(t, nil)
	h := newHandler(t, testConfig(t, newStripeClient(f.URL, 0)), nil)
	r := httptest.NewRequest(http.MethodPost, "/billing/checkout", nil)
	r.Body = nil
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set(subjectHeader, "alice")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusBadRequest {
		t.Fatalf("status %d, want 400 (empty body); body %s", w.Code, w.Body)
	}
	if r.Body != nil {
		t.Errorf("the caller's request Body was set to %v, want it left nil", r.Body)
	}
}

// TestHandlerRoutes: ServeHTTP routes by the path's last element, whatever
// the prefix it is mounted under; Checkout and Portal serve their endpoint
// on any path. Each routed request is told apart by what reaches Stripe.
func TestHandlerRoutes(t *testing.T) {
	t.Parallel()
	f := newFakeStripe(t, nil)
	h := newHandler(t, testConfig(t, newStripeClient(f.URL, 0)), nil)
	for _, tt := range []struct {
		name       string
		h          http.Handler
		path       string
		want       int
		stripePath string // "" for no Stripe call
	}{
		{"checkout", h, "/billing/checkout", 200, "/v1/checkout/sessions"},
		{"portal", h, "/billing/portal", 200, "/v1/billing_portal/sessions"},
		{"other prefix", h, "/api/v2/pay/checkout", 200, "/v1/checkout/sessions"},
		{"stripped prefix", h, "portal", 200, "/v1/billing_portal/sessions"},
		{"unknown endpoint", h, "/billing/refund", 404, ""},
		{"subtree root", h, "/billing/", 404, ""},
		{"trailing slash", h, "/billing/checkout/", 404, ""},
		{"prefix only", h, "/billing/checkouts", 404, ""},
		{"Checkout on any path", h.Checkout(), "/pay", 200, "/v1/checkout/sessions"},
		{"Checkout on the portal path", h.Checkout(), "/billing/portal", 200, "/v1/checkout/sessions"},
		{"Portal on any path", h.Portal(), "/account/billing", 200, "/v1/billing_portal/sessions"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(f.all())
			body := `{"tier":"pro"}`
			if tt.stripePath == "/v1/billing_portal/sessions" {
				body = `{}`
			}
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
			r.URL.Path = tt.path
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set(subjectHeader, "carol")
			w := httptest.NewRecorder()
			tt.h.ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d; body %s", w.Code, tt.want, w.Body)
			}
			all := f.all()
			switch {
			case tt.stripePath == "" && len(all) != before:
				t.Errorf("Stripe got %d requests, want none", len(all)-before)
			case tt.stripePath != "" && (len(all) != before+1 || all[len(all)-1].Path != tt.stripePath):
				t.Errorf("Stripe got %d requests (last %+v), want one to %s", len(all)-before, f.last(t), tt.stripePath)
			}
			if tt.want == 404 && w.Header().Get("Content-Type") != "application/problem+json" {
				t.Errorf("404 Content-Type = %q, want application/problem+json", w.Header().Get("Content-Type"))
			}
		})
	}
}

// TestHandlerLoggerDefault: a nil Logger means slog.Default. It swaps the
// default logger, so it does not run in parallel (parallel tests resume
// only after it returns).
func TestHandlerLoggerDefault(t *testing.T) {
	var buf bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, nil)))
	defer slog.SetDefault(prev)

	f := newFakeStripe(t, nil)
	h := newHandler(t, testConfig(t, newStripeClient(f.URL, 0)), func(c *checkout.HandlerConfig) { c.Logger = nil })
	if w := (call{path: "portal", subject: "broken"}).do(h); w.Code != 503 {
		t.Fatalf("status %d, want 503 (customer lookup failed)", w.Code)
	}
	if !strings.Contains(buf.String(), "checkout: customer lookup failed") {
		t.Errorf("slog.Default got %q, want the failed lookup's record", buf.String())
	}
}
