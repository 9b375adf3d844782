package checkout_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"

	"github.com/billkit/billkit/checkout"
	"github.com/billkit/billkit/internal/testserver"
)

// TestStripeMockCheckoutSession creates a Checkout session against
// stripe-mock and checks what Stripe received (C1, C2, C4).
func TestStripeMockCheckoutSession(t *testing.T) {
	t.Parallel()
	mock := testserver.StartStripeMock(t, testserver.StripeMockUsageRecords)
	proxy, rec := recordingProxy(t, mock.URL)
	cfg := testConfig(t, newStripeClient(proxy.URL, 0))
	cfg.TrialDays = 14
	cfg.AllowPromotionCodes = true
	s := newSessions(t, cfg)

	tests := []struct {
		name       string
		req        checkout.CheckoutRequest
		wantPrices []string
		customer   string
		email      string
	}{
		{
			name:       "flat tier, email prefilled",
			req:        checkout.CheckoutRequest{Subject: "alice", Tier: "STARTER", Email: "alice@example.com", IdempotencyKey: "key-alice-1"},
			wantPrices: []string{"price_starter123"},
			email:      "alice@example.com",
		},
		{
			name:       "metered tier, known customer",
			req:        checkout.CheckoutRequest{Subject: "bob", Tier: "pro", CustomerID: "cus_bob", Email: "ignored@example.com"},
			wantPrices: []string{"price_pro456", "price_prometered789"},
			customer:   "cus_bob",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.CreateCheckoutSession(context.Background(), tt.req)
			if err != nil {
				t.Fatalf("CreateCheckoutSession: %v", err)
			}
			if !strings.HasPrefix(got.ID, "cs_") || got.URL == "" {
				t.Errorf("session = %+v, want a cs_ ID and a URL", got)
			}
			r := rec.last(t)
			if r.Method != http.MethodPost || r.Path != "/v1/checkout/sessions" {
				t.Fatalf("Stripe got %s %s, want POST /v1/checkout/sessions", r.Method, r.Path)
			}
			if r.Authorization != "Bearer "+testSecretKey {
				t.Errorf("Authorization = %q: the session's own client key was not used", r.Authorization)
			}
			if tt.req.IdempotencyKey != "" && r.IdempotencyKey != tt.req.IdempotencyKey {
				t.Errorf("Idempotency-Key = %q, want %q", r.IdempotencyKey, tt.req.IdempotencyKey)
			}
			if r.IdempotencyKey == "" {
				t.Error("no Idempotency-Key sent")
			}
			tier, _ := cfg.Catalog.Tier(tt.req.Tier)
			want := map[string]string{
				"mode":                      "subscription",
				"success_url":               cfg.SuccessURL,
				"cancel_url":                cfg.CancelURL,
				"client_reference_id":       tt.req.Subject,
				"metadata[billkit_subject]": tt.req.Subject,
				"metadata[billkit_tier]":    tier.Name,
				"subscription_data[metadata][billkit_subject]": tt.req.Subject,
				"subscription_data[metadata][billkit_tier]":    tier.Name,
				"subscription_data[trial_period_days]":         "14",
				"allow_promotion_codes":                        "true",
				"line_items[0][quantity]":                      "1",
				"customer":                                     tt.customer,
				"customer_email":                               tt.email,
			}
			for i, p := range tt.wantPrices {
				want["line_items["+string(rune('0'+i))+"][price]"] = p
			}
			for k, v := range want {
				if got := r.Form.Get(k); got != v {
					t.Errorf("form %s = %q, want %q", k, got, v)
				}
			}
			if _, ok := r.Form["line_items[1][quantity]"]; ok {
				t.Error("the metered line item has a quantity; Stripe rejects that")
			}
			if _, ok := r.Form["line_items["+string(rune('0'+len(tt.wantPrices)))+"][price]"]; ok {
				t.Error("more line items than the tier's prices")
			}
		})
	}
}

// TestStripeMockPortalSession creates a billing-portal session against
// stripe-mock.
func TestStripeMockPortalSession(t *testing.T) {
	t.Parallel()
	mock := testserver.StartStripeMock(t, testserver.StripeMockUsageRecords)
	proxy, rec := recordingProxy(t, mock.URL)
	s := newSessions(t, testConfig(t, newStripeClient(proxy.URL, 0)))

	got, err := s.CreatePortalSession(context.Background(), checkout.PortalRequest{CustomerID: "cus_alice", IdempotencyKey: "portal-1"})
	if err != nil {
		t.Fatalf("CreatePortalSession: %v", err)
	}
	if !strings.HasPrefix(got.ID, "bps_") || got.URL == "" {
		t.Errorf("session = %+v, want a bps_ ID and a URL", got)
	}
	r := rec.last(t)
	if r.Path != "/v1/billing_portal/sessions" {
		t.Fatalf("path = %s", r.Path)
	}
	for k, v := range map[string]string{"customer": "cus_alice", "return_url": "https://app.example.com/account"} {
		if got := r.Form.Get(k); got != v {
			t.Errorf("form %s = %q, want %q", k, got, v)
		}
	}
	if r.IdempotencyKey != "portal-1" {
		t.Errorf("Idempotency-Key = %q, want portal-1", r.IdempotencyKey)
	}
}

// TestRetryReusesIdempotencyKey: a 503 then a 200 is retried by stripe-go
// (MaxNetworkRetries) with the same Idempotency-Key (C3). The test client
// retries without stripe-go's backoff sleep (see newStripeClient).
func TestRetryReusesIdempotencyKey(t *testing.T) {
	t.Parallel()
	for _, key := range []string{"", "caller-key-42"} {
		t.Run("key="+key, func(t *testing.T) {
			t.Parallel()
			f := newFakeStripe(t, func(n int, w http.ResponseWriter, r *http.Request) {
				if n == 0 {
					stripeError(w, http.StatusServiceUnavailable, "req_503", "api_error", "", "temporarily unavailable")
					return
				}
				okSession(n, w, r)
			})
			s := newSessions(t, testConfig(t, newStripeClient(f.URL, 2)))
			got, err := s.CreateCheckoutSession(context.Background(), checkout.CheckoutRequest{Subject: "alice", Tier: "pro", IdempotencyKey: key})
			if err != nil {
				t.Fatalf("CreateCheckoutSession: %v", err)
			}
			if got.ID != "cs_test_1" {
				t.Errorf("ID = %q, want the retry's cs_test_1", got.ID)
			}
			reqs := f.all()
			if len(reqs) != 2 {
				t.Fatalf("Stripe got %d requests, want 2 (one retry)", len(reqs))
			}
			if reqs[0].IdempotencyKey == "" || reqs[0].IdempotencyKey != reqs[1].IdempotencyKey {
				t.Errorf("Idempotency-Keys = %q, %q: want one non-empty key for both attempts", reqs[0].IdempotencyKey, reqs[1].IdempotencyKey)
			}
			if key != "" && reqs[0].IdempotencyKey != key {
				t.Errorf("Idempotency-Key = %q, want the caller's %q", reqs[0].IdempotencyKey, key)
			}
			if got.IdempotencyKey != reqs[0].IdempotencyKey {
				t.Errorf("Session.IdempotencyKey = %q, want %q", got.IdempotencyKey, reqs[0].IdempotencyKey)
			}
		})
	}
}

// TestGeneratedKeysDiffer: without a caller key, each logical request has
// its own random key.
func TestGeneratedKeysDiffer(t *testing.T) {
	t.Parallel()
	f := newFakeStripe(t, nil)
	s := newSessions(t, testConfig(t, newStripeClient(f.URL, 0)))
	seen := map[string]bool{}
	for i := 0; i < 20; i++ {
		got, err := s.CreateCheckoutSession(context.Background(), checkout.CheckoutRequest{Subject: "alice", Tier: "pro"})
		if err != nil {
			t.Fatal(err)
		}
		if seen[got.IdempotencyKey] {
			t.Fatalf("key %q generated twice", got.IdempotencyKey)
		}
		seen[got.IdempotencyKey] = true
	}
}

// TestStripeErrors: Stripe's error answers become errors wrapping ErrStripe
// and the *stripe.Error, without retrying what is not retryable.
func TestStripeErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		status   int
		typ      string
		wantType stripe.ErrorType
	}{
		{"card error 402", http.StatusPaymentRequired, "card_error", stripe.ErrorTypeCard},
		{"invalid request 400", http.StatusBadRequest, "invalid_request_error", stripe.ErrorTypeInvalidRequest},
		{"api error 500", http.StatusInternalServerError, "api_error", stripe.ErrorTypeAPI},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeStripe(t, func(n int, w http.ResponseWriter, r *http.Request) {
				stripeError(w, tt.status, "req_err", tt.typ, "", "No such price: 'price_pro456'")
			})
			s := newSessions(t, testConfig(t, newStripeClient(f.URL, 2)))
			_, err := s.CreateCheckoutSession(context.Background(), checkout.CheckoutRequest{Subject: "alice", Tier: "pro"})
			if !errors.Is(err, checkout.ErrStripe) || errors.Is(err, checkout.ErrTimeout) {
				t.Fatalf("err = %v, want ErrStripe and not ErrTimeout", err)
			}
			var se *stripe.Error
			if !errors.As(err, &se) || se.Type != tt.wantType || se.RequestID != "req_err" {
				t.Fatalf("err = %v, want a *stripe.Error of type %s with request ID", err, tt.wantType)
			}
			if n := len(f.all()); n != 1 {
				t.Errorf("Stripe got %d requests, want 1 (a POST with this answer is not retried)", n)
			}
		})
	}
}

// TestDeadline: a Stripe that does not answer makes the call fail with
// ErrTimeout within the configured Timeout (C3).
func TestDeadline(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	f := newFakeStripe(t, func(n int, w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) }) // runs before f.Close
	cfg := testConfig(t, newStripeClient(f.URL, 2))
	cfg.Timeout = 50 * time.Millisecond
	s := newSessions(t, cfg)

	for _, call := range []func() error{
		func() error {
			_, err := s.CreateCheckoutSession(context.Background(), checkout.CheckoutRequest{Subject: "alice", Tier: "pro"})
			return err
		},
		func() error {
			_, err := s.CreatePortalSession(context.Background(), checkout.PortalRequest{CustomerID: "cus_1"})
			return err
		},
	} {
		done := make(chan error, 1)
		go func() { done <- call() }()
		select {
		case err := <-done:
			if !errors.Is(err, checkout.ErrTimeout) || !errors.Is(err, checkout.ErrStripe) {
				t.Fatalf("err = %v, want ErrTimeout and ErrStripe", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the call ignored its deadline")
		}
	}
}

// TestRequestValidation: bad requests never reach Stripe.
func TestRequestValidation(t *testing.T) {
	t.Parallel()
	f := newFakeStripe(t, nil)
	s := newSessions(t, testConfig(t, newStripeClient(f.URL, 0)))
	tests := []struct {
		name string
		req  checkout.CheckoutRequest
		want error
	}{
		{"unknown tier", checkout.CheckoutRequest{Subject: "a", Tier: "gold"}, checkout.ErrUnknownTier},
		{"empty tier", checkout.CheckoutRequest{Subject: "a"}, checkout.ErrUnknownTier},
		{"no subject", checkout.CheckoutRequest{Tier: "pro"}, checkout.ErrInvalidRequest},
		{"subject too long", checkout.CheckoutRequest{Subject: strings.Repeat("a", 201), Tier: "pro"}, checkout.ErrInvalidRequest},
		{"subject with a brace", checkout.CheckoutRequest{Subject: "a{b}", Tier: "pro"}, checkout.ErrInvalidRequest},
		{"subject with a newline", checkout.CheckoutRequest{Subject: "a\nb", Tier: "pro"}, checkout.ErrInvalidRequest},
		{"subject not UTF-8", checkout.CheckoutRequest{Subject: "a\xffb", Tier: "pro"}, checkout.ErrInvalidRequest},
		{"bad email", checkout.CheckoutRequest{Subject: "a", Tier: "pro", Email: "not an email"}, checkout.ErrInvalidRequest},
		{"named email", checkout.CheckoutRequest{Subject: "a", Tier: "pro", Email: "Al <a@example.com>"}, checkout.ErrInvalidRequest},
		{"key with space", checkout.CheckoutRequest{Subject: "a", Tier: "pro", IdempotencyKey: "a b"}, checkout.ErrInvalidRequest},
		{"key too long", checkout.CheckoutRequest{Subject: "a", Tier: "pro", IdempotencyKey: strings.Repeat("k", 256)}, checkout.ErrInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.CreateCheckoutSession(context.Background(), tt.req)
			if !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
	var ute *checkout.UnknownTierError
	_, err := s.CreateCheckoutSession(context.Background(), checkout.CheckoutRequest{Subject: "a", Tier: "gold"})
	if !errors.As(err, &ute) || strings.Join(ute.Valid, ",") != "pro,starter" {
		t.Errorf("err = %v, want an UnknownTierError listing pro,starter", err)
	}
	if _, err := s.CreatePortalSession(context.Background(), checkout.PortalRequest{}); !errors.Is(err, checkout.ErrNoCustomer) {
		t.Errorf("portal without customer: err = %v, want ErrNoCustomer", err)
	}
	if n := len(f.all()); n != 0 {
		t.Errorf("Stripe got %d requests for invalid input, want 0", n)
	}
}

// TestConfigErrors: New rejects each invalid field and names it.
func TestConfigErrors(t *testing.T) {
	t.Parallel()
	sc := newStripeClient("http://127.0.0.1:1", 0)
	tests := []struct {
		name  string
		edit  func(*checkout.Config)
		field string
	}{
		{"nil Stripe", func(c *checkout.Config) { c.Stripe = nil }, "Config.Stripe"},
		{"uninitialized Stripe", func(c *checkout.Config) { c.Stripe = &client.API{} }, "Config.Stripe"},
		{"nil catalog", func(c *checkout.Config) { c.Catalog = nil }, "Config.Catalog"},
		{"empty catalog", func(c *checkout.Config) { c.Catalog = &checkout.Prices{} }, "Config.Catalog: no tiers"},
		{"nil Prices", func(c *checkout.Config) { c.Catalog = (*checkout.Prices)(nil) }, "Config.Catalog: no tiers"},
		{"listed tier not found", func(c *checkout.Config) {
			c.Catalog = listCatalog{names: []string{"pro", "gold"}, tiers: map[string]checkout.Tier{"pro": {Name: "pro", PriceID: "price_p"}}}
		}, `Config.Catalog: tier "gold" is listed but not found`},
		{"upper-case tier, exact lookup", func(c *checkout.Config) {
			c.Catalog = listCatalog{names: []string{"Pro"}, tiers: map[string]checkout.Tier{"Pro": {Name: "Pro", PriceID: "price_p"}}}
		}, `Config.Catalog: tier "Pro" is listed but not found by Tier("pro")`},
		{"tier without a price", func(c *checkout.Config) {
			c.Catalog = listCatalog{names: []string{"pro"}, tiers: map[string]checkout.Tier{"pro": {Name: "pro"}}}
		}, `Config.Catalog: tier "pro" has no PriceID`},
		{"tier without a name", func(c *checkout.Config) {
			c.Catalog = listCatalog{names: []string{"pro"}, tiers: map[string]checkout.Tier{"pro": {PriceID: "price_p"}}}
		}, `Config.Catalog: tier "pro" has no Name`},
		{"no success URL", func(c *checkout.Config) { c.SuccessURL = "" }, "Config.SuccessURL"},
		{"relative success URL", func(c *checkout.Config) { c.SuccessURL = "/done" }, "Config.SuccessURL"},
		{"ftp cancel URL", func(c *checkout.Config) { c.CancelURL = "ftp://example.com/x" }, "Config.CancelURL"},
		{"no cancel URL", func(c *checkout.Config) { c.CancelURL = "" }, "Config.CancelURL"},
		{"bad portal URL", func(c *checkout.Config) { c.PortalReturnURL = "example.com" }, "Config.PortalReturnURL"},
		{"negative trial", func(c *checkout.Config) { c.TrialDays = -1 }, "Config.TrialDays"},
		{"trial too long", func(c *checkout.Config) { c.TrialDays = 731 }, "Config.TrialDays"},
		{"negative timeout", func(c *checkout.Config) { c.Timeout = -time.Second }, "Config.Timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t, sc)
			tt.edit(&cfg)
			s, err := checkout.New(cfg)
			if s != nil || !errors.Is(err, checkout.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.field) {
				t.Errorf("New = %v, %v; want ErrInvalidConfig naming %s", s, err, tt.field)
			}
		})
	}
	cfg := testConfig(t, sc)
	cfg.PortalReturnURL = ""
	if _, err := checkout.New(cfg); err != nil {
		t.Errorf("an empty PortalReturnURL is optional: %v", err)
	}
}

// listCatalog is a Catalog other than Prices, as billing's plans are one:
// exact-match lookups, tiers listed in the order configured.
type listCatalog struct {
	names []string
	tiers map[string]checkout.Tier
}

func (c listCatalog) Tier(name string) (checkout.Tier, bool) { t, ok := c.tiers[name]; return t, ok }
func (c listCatalog) Tiers() []string                        { return append([]string(nil), c.names...) }

// TestOtherCatalog: Sessions and Handler work from any Catalog: the tier is
// looked up trimmed and lower-cased, its prices and Name reach Stripe, and
// an unknown tier lists the valid ones in the catalog's own order.
func TestOtherCatalog(t *testing.T) {
	t.Parallel()
	f := newFakeStripe(t, nil)
	cfg := testConfig(t, newStripeClient(f.URL, 0))
	cfg.Catalog = listCatalog{names: []string{"starter", "pro"}, tiers: map[string]checkout.Tier{
		"starter": {Name: "starter", PriceID: "price_other_s"},
		"pro":     {Name: "pro", PriceID: "price_other_p", MeteredPriceID: "price_other_pm"},
	}}
	s := newSessions(t, cfg)
	if _, err := s.CreateCheckoutSession(context.Background(), checkout.CheckoutRequest{Subject: "alice", Tier: " PRO "}); err != nil {
		t.Fatal(err)
	}
	r := f.last(t)
	for k, v := range map[string]string{
		"line_items[0][price]": "price_other_p", "line_items[1][price]": "price_other_pm",
		"metadata[billkit_tier]": "pro", "subscription_data[metadata][billkit_tier]": "pro",
	} {
		if got := r.Form.Get(k); got != v {
			t.Errorf("form %s = %q, want %q", k, got, v)
		}
	}
	var ute *checkout.UnknownTierError
	_, err := s.CreateCheckoutSession(context.Background(), checkout.CheckoutRequest{Subject: "alice", Tier: "gold"})
	if !errors.As(err, &ute) || strings.Join(ute.Valid, ",") != "starter,pro" {
		t.Errorf("err = %v, want an UnknownTierError listing starter,pro in the catalog's order", err)
	}
	h := newHandlerFor(t, s, nil)
	w := call{subject: "alice", body: `{"tier":"gold"}`}.do(h)
	var p problemBody
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || w.Code != 400 || strings.Join(p.ValidTiers, ",") != "starter,pro" {
		t.Errorf("unknown tier: %d %s, want 400 with valid_tiers [starter pro]", w.Code, w.Body)
	}
	if n := len(f.all()); n != 1 {
		t.Errorf("Stripe got %d requests, want 1", n)
	}
}
