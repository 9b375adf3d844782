package checkout_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"

	"github.com/billkit/billkit/checkout"
)

// exampleStripe is a stand-in for api.stripe.com so that the examples run
// offline: it prints a few fields of each request and answers with a
// session.
func exampleStripe() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(body))
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/checkout/sessions":
			fmt.Printf("stripe: mode=%s price=%s client_reference_id=%s subscription_data.metadata.billkit_subject=%s\n",
				form.Get("mode"), form.Get("line_items[0][price]"), form.Get("client_reference_id"),
				form.Get("subscription_data[metadata][billkit_subject]"))
			io.WriteString(w, `{"id":"cs_test_a1","object":"checkout.session","url":"https://checkout.stripe.com/c/pay/cs_test_a1"}`)
		case "/v1/billing_portal/sessions":
			fmt.Printf("stripe: portal for customer=%s\n", form.Get("customer"))
			io.WriteString(w, `{"id":"bps_test_b2","object":"billing_portal.session","url":"https://billing.stripe.com/p/session/test_b2"}`)
		default:
			http.NotFound(w, r)
		}
	}))
}

// exampleClient builds the Stripe client the way a server does: its own
// key and backend, with stripe-go's network retries. In production leave
// URL unset (api.stripe.com) and read the key from STRIPE_SECRET_KEY.
func exampleClient(stripeURL string) *client.API {
	return client.New("sk_test_example", &stripe.Backends{
		API: stripe.GetBackendWithConfig(stripe.APIBackend, &stripe.BackendConfig{
			URL:               stripe.String(stripeURL),
			MaxNetworkRetries: stripe.Int64(2), // retries reuse the idempotency key
			HTTPClient:        &http.Client{Timeout: 30 * time.Second},
			LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull},
		}),
	})
}

// Prices come from the environment: PRICE_<TIER>, and PRICE_<TIER>_METERED
// for a usage-based price. Pass os.LookupEnv in a real program.
func ExamplePricesFromEnv() {
	env := map[string]string{
		"PRICE_STARTER":     "price_1StarterMonthly",
		"PRICE_PRO":         "price_1ProMonthly",
		"PRICE_PRO_METERED": "price_1ProPerRequest",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }

	prices, err := checkout.PricesFromEnv(lookup, "starter", "pro")
	if err != nil {
		log.Fatal(err)
	}
	for _, name := range prices.Tiers() {
		t, _ := prices.Tier(name)
		fmt.Println(strings.TrimSpace(t.Name + ": " + t.PriceID + " " + t.MeteredPriceID))
	}

	_, err = checkout.PricesFromEnv(lookup, "starter", "team")
	fmt.Println(err)
	// Output:
	// pro: price_1ProMonthly price_1ProPerRequest
	// starter: price_1StarterMonthly
	// checkout: invalid config: PRICE_TEAM is not set (the Stripe price ID of tier "team")
}

// PricesFromEnviron discovers every PRICE_* variable; pass os.Environ().
// Errors name the variable, never its value.
func ExamplePricesFromEnviron() {
	prices, err := checkout.PricesFromEnviron([]string{
		"HOME=/home/api",
		"PRICE_STARTER=price_1Starter",
		"PRICE_PRO=price_1Pro",
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(prices.Tiers())

	_, err = checkout.PricesFromEnviron([]string{"PRICE_PRO=sk_live_notAPrice"})
	fmt.Println(err)
	// Output:
	// [pro starter]
	// checkout: invalid config: PRICE_PRO: price ID must start with "price_"
}

// planTable is an application's own plan catalog. Implementing Catalog
// lets checkout sell its tiers without a second list of prices; billkit's
// billing plans do the same.
type planTable []struct{ tier, price string }

func (p planTable) Tier(name string) (checkout.Tier, bool) {
	for _, row := range p {
		if row.tier == name {
			return checkout.Tier{Name: row.tier, PriceID: row.price}, true
		}
	}
	return checkout.Tier{}, false
}

func (p planTable) Tiers() []string {
	names := make([]string, len(p))
	for i, row := range p {
		names[i] = row.tier
	}
	return names
}

func ExampleCatalog() {
	fake := exampleStripe()
	defer fake.Close()

	sessions, err := checkout.New(checkout.Config{
		Stripe:     exampleClient(fake.URL),
		Catalog:    planTable{{"hobby", "price_1Hobby"}, {"business", "price_1Business"}},
		SuccessURL: "https://app.example.com/welcome",
		CancelURL:  "https://app.example.com/pricing",
	})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := sessions.CreateCheckoutSession(context.Background(), checkout.CheckoutRequest{Subject: "acct_7", Tier: "Business"}); err != nil {
		log.Fatal(err)
	}
	_, err = sessions.CreateCheckoutSession(context.Background(), checkout.CheckoutRequest{Subject: "acct_7", Tier: "gold"})
	fmt.Println(err)
	// Output:
	// stripe: mode=subscription price=price_1Business client_reference_id=acct_7 subscription_data.metadata.billkit_subject=acct_7
	// checkout: unknown tier "gold" (valid tiers: hobby, business)
}

func ExampleSessions_CreateCheckoutSession() {
	fake := exampleStripe()
	defer fake.Close()

	prices, err := checkout.NewPrices(checkout.Tier{Name: "pro", PriceID: "price_1ProMonthly"})
	if err != nil {
		log.Fatal(err)
	}
	sessions, err := checkout.New(checkout.Config{
		Stripe:     exampleClient(fake.URL),
		Catalog:    prices,
		SuccessURL: "https://app.example.com/welcome?session_id={CHECKOUT_SESSION_ID}",
		CancelURL:  "https://app.example.com/pricing",
		TrialDays:  14,
	})
	if err != nil {
		log.Fatal(err)
	}
	s, err := sessions.CreateCheckoutSession(context.Background(), checkout.CheckoutRequest{
		Subject: "acct_42", // your account ID: it comes back in every webhook event
		Tier:    "Pro",
		Email:   "dev@example.com",
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(s.ID, s.URL)
	// Output:
	// stripe: mode=subscription price=price_1ProMonthly client_reference_id=acct_42 subscription_data.metadata.billkit_subject=acct_42
	// cs_test_a1 https://checkout.stripe.com/c/pay/cs_test_a1
}

// exampleHandler builds a Handler for the examples: the subject comes from
// the caller's authentication (here a fixed API key), never from the body.
func exampleHandler(stripeURL string) *checkout.Handler {
	prices, err := checkout.NewPrices(
		checkout.Tier{Name: "starter", PriceID: "price_1Starter"},
		checkout.Tier{Name: "pro", PriceID: "price_1Pro"},
	)
	if err != nil {
		log.Fatal(err)
	}
	sessions, err := checkout.New(checkout.Config{
		Stripe:          exampleClient(stripeURL),
		Catalog:         prices,
		SuccessURL:      "https://app.example.com/welcome",
		CancelURL:       "https://app.example.com/pricing",
		PortalReturnURL: "https://app.example.com/account",
	})
	if err != nil {
		log.Fatal(err)
	}
	h, err := checkout.NewHandler(checkout.HandlerConfig{
		Sessions: sessions,
		Subject: func(r *http.Request) (string, error) {
			if r.Header.Get("Authorization") != "Bearer demo-key" {
				return "", fmt.Errorf("unauthenticated")
			}
			return "acct_42", nil
		},
		// The subject's Stripe customer, for the portal (billing's
		// entitlement store provides it).
		Customer: func(ctx context.Context, subject string) (string, error) {
			return "cus_42", nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	return h
}

// examplePost posts body to url as the examples' authenticated client and
// prints the answer.
func examplePost(url, body string) {
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer demo-key")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "9f1c2b7e-order-1")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	fmt.Printf("%d %s %s", res.StatusCode, res.Header.Get("Content-Type"), b)
}

// A Handler mounted on a subtree serves both endpoints.
func ExampleHandler() {
	fake := exampleStripe()
	defer fake.Close()

	mux := http.NewServeMux()
	mux.Handle("/billing/", exampleHandler(fake.URL)) // POST /billing/checkout and /billing/portal
	srv := httptest.NewServer(mux)
	defer srv.Close()

	examplePost(srv.URL+"/billing/checkout", `{"tier":"pro"}`)
	examplePost(srv.URL+"/billing/checkout", `{"tier":"gold"}`)
	examplePost(srv.URL+"/billing/portal", ``)
	// Output:
	// stripe: mode=subscription price=price_1Pro client_reference_id=acct_42 subscription_data.metadata.billkit_subject=acct_42
	// 200 application/json {"id":"cs_test_a1","url":"https://checkout.stripe.com/c/pay/cs_test_a1"}
	// 400 application/problem+json {"type":"about:blank","title":"Bad Request","status":400,"detail":"unknown tier \"gold\"; valid tiers: pro, starter","valid_tiers":["pro","starter"]}
	// stripe: portal for customer=cus_42
	// 200 application/json {"id":"bps_test_b2","url":"https://billing.stripe.com/p/session/test_b2"}
}

// Checkout and Portal mount each endpoint on a path of its own, here behind
// a middleware.
func ExampleHandler_Checkout() {
	fake := exampleStripe()
	defer fake.Close()

	h := exampleHandler(fake.URL)
	logged := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Println("request:", r.Method, r.URL.Path)
			next.ServeHTTP(w, r)
		})
	}
	mux := http.NewServeMux()
	mux.Handle("/subscribe", logged(h.Checkout()))
	mux.Handle("/account/billing", logged(h.Portal()))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	examplePost(srv.URL+"/subscribe", `{"tier":"starter"}`)
	examplePost(srv.URL+"/account/billing", `{}`)
	// Output:
	// request: POST /subscribe
	// stripe: mode=subscription price=price_1Starter client_reference_id=acct_42 subscription_data.metadata.billkit_subject=acct_42
	// 200 application/json {"id":"cs_test_a1","url":"https://checkout.stripe.com/c/pay/cs_test_a1"}
	// request: POST /account/billing
	// stripe: portal for customer=cus_42
	// 200 application/json {"id":"bps_test_b2","url":"https://billing.stripe.com/p/session/test_b2"}
}

// A server started without Stripe credentials still mounts the endpoints;
// they answer 503 and say how to configure them.
func ExampleNotConfigured() {
	h := checkout.NotConfigured("checkout is not configured: set STRIPE_SECRET_KEY and PRICE_<TIER>")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/billing/checkout", strings.NewReader(`{"tier":"pro"}`)))
	fmt.Print(w.Code, " ", w.Body)
	// Output:
	// 503 {"type":"about:blank","title":"Service Unavailable","status":503,"detail":"checkout is not configured: set STRIPE_SECRET_KEY and PRICE_<TIER>"}
}
