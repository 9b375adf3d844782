package checkout_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"

	"github.com/billkit/billkit/checkout"
)

// testSecretKey is the Stripe key the tests' clients use; no response body
// or error detail may ever contain it.
const testSecretKey = "sk_test_billkitSECRETdoNotLeak"

// recorded is one request Stripe (fake or behind the recording proxy)
// received.
type recorded struct {
	Method, Path   string
	IdempotencyKey string
	Authorization  string
	Form           url.Values
}

// recorder keeps the requests it saw. It is safe for concurrent use.
type recorder struct {
	mu   sync.Mutex
	reqs []recorded
}

func (rc *recorder) record(r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	form, _ := url.ParseQuery(string(body))
	rc.mu.Lock()
	rc.reqs = append(rc.reqs, recorded{
		Method: r.Method, Path: r.URL.Path,
		IdempotencyKey: r.Header.Get("Idempotency-Key"),
		Authorization:  r.Header.Get("Authorization"),
		Form:           form,
	})
	rc.mu.Unlock()
	r.Body = io.NopCloser(strings.NewReader(string(body)))
	r.ContentLength = int64(len(body))
}

func (rc *recorder) all() []recorded {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]recorded(nil), rc.reqs...)
}

func (rc *recorder) last(t *testing.T) recorded {
	t.Helper()
	all := rc.all()
	if len(all) == 0 {
		t.Fatal("Stripe received no request")
	}
	return all[len(all)-1]
}

// fakeStripe is an httptest Stripe API. respond answers the n-th request
// (0-based); the default answers every request with a session.
type fakeStripe struct {
	*httptest.Server
	recorder
	mu      sync.Mutex
	n       int
	respond func(n int, w http.ResponseWriter, r *http.Request)
}

func newFakeStripe(t testing.TB, respond func(n int, w http.ResponseWriter, r *http.Request)) *fakeStripe {
	f := &fakeStripe{respond: respond}
	if f.respond == nil {
		f.respond = okSession
	}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.record(r)
		f.mu.Lock()
		n := f.n
		f.n++
		f.mu.Unlock()
		f.respond(n, w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

// okSession answers like Stripe's session endpoints.
func okSession(n int, w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Request-Id", fmt.Sprintf("req_ok%d", n))
	if strings.HasPrefix(r.URL.Path, "/v1/billing_portal/") {
		fmt.Fprintf(w, `{"id":"bps_test_%d","object":"billing_portal.session","url":"https://billing.stripe.com/p/session/test_%d"}`, n, n)
		return
	}
	fmt.Fprintf(w, `{"id":"cs_test_%d","object":"checkout.session","mode":"subscription","url":"https://checkout.stripe.com/c/pay/cs_test_%d"}`, n, n)
}

// stripeError answers with a Stripe error body.
func stripeError(w http.ResponseWriter, status int, reqID, typ, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Request-Id", reqID)
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"type": typ, "code": code, "message": msg}})
}

// newStripeClient returns a Stripe client for the API at baseURL, with
// retries stripe-go's own and its logging off. stripe-go sleeps 0.5 s to 5 s
// before a retry; its test switch SetNetworkRetriesSleep(false) retries at
// once instead, so that the retry tests wait for nothing. Production code
// never turns the sleep off.
func newStripeClient(baseURL string, retries int64) *client.API {
	backend := stripe.GetBackendWithConfig(stripe.APIBackend, &stripe.BackendConfig{
		URL:               stripe.String(baseURL),
		MaxNetworkRetries: stripe.Int64(retries),
		HTTPClient:        &http.Client{Timeout: 30 * time.Second},
		LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull},
	})
	backend.(*stripe.BackendImplementation).SetNetworkRetriesSleep(false)
	return client.New(testSecretKey, &stripe.Backends{API: backend})
}

// recordingProxy is a reverse proxy that records each request's form body
// before forwarding it to target.
func recordingProxy(t testing.TB, target string) (*httptest.Server, *recorder) {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rc := &recorder{}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc.record(r)
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, rc
}

func testCatalog(t testing.TB) *checkout.Prices {
	c, err := checkout.NewPrices(
		checkout.Tier{Name: "Starter", PriceID: "price_starter123"},
		checkout.Tier{Name: "pro", PriceID: "price_pro456", MeteredPriceID: "price_prometered789"},
	)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func testConfig(t testing.TB, sc *client.API) checkout.Config {
	return checkout.Config{
		Stripe:          sc,
		Catalog:         testCatalog(t),
		SuccessURL:      "https://app.example.com/billing/done?session_id={CHECKOUT_SESSION_ID}",
		CancelURL:       "https://app.example.com/pricing",
		PortalReturnURL: "https://app.example.com/account",
	}
}

func newSessions(t testing.TB, cfg checkout.Config) *checkout.Sessions {
	s, err := checkout.New(cfg)
	if err != nil {
		t.Fatalf("checkout.New: %v", err)
	}
	return s
}
