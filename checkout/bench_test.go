package checkout_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/billkit/billkit/checkout"
)

// BenchmarkServeCheckout measures the handler's own cost around one Stripe
// call: authentication, body decoding, validation, the Stripe request over
// loopback to a fake Stripe, and the JSON answer.
func BenchmarkServeCheckout(b *testing.B) {
	f := newFakeStripe(b, nil)
	h := newHandler(b, testConfig(b, newStripeClient(f.URL, 0)), nil)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := httptest.NewRequest(http.MethodPost, "/billing/checkout", strings.NewReader(`{"tier":"pro","email":"a@example.com"}`))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set(subjectHeader, "alice")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			b.Fatalf("status %d", w.Code)
		}
	}
}

// BenchmarkServeCheckoutRejected measures a request rejected before Stripe
// (unknown tier): the cost of a bad request.
func BenchmarkServeCheckoutRejected(b *testing.B) {
	f := newFakeStripe(b, nil)
	h := newHandler(b, testConfig(b, newStripeClient(f.URL, 0)), nil)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := httptest.NewRequest(http.MethodPost, "/billing/checkout", strings.NewReader(`{"tier":"gold"}`))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set(subjectHeader, "alice")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusBadRequest {
			b.Fatalf("status %d", w.Code)
		}
	}
}

// BenchmarkPricesTier measures the tier lookup every checkout request
// makes, with the name's normalization.
func BenchmarkPricesTier(b *testing.B) {
	c, err := checkout.PricesFromEnviron([]string{
		"PRICE_FREE=price_free1", "PRICE_STARTER=price_starter1", "PRICE_PRO=price_pro1",
		"PRICE_PRO_METERED=price_prom1", "PRICE_ENTERPRISE=price_ent1",
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, ok := c.Tier("Pro"); !ok {
			b.Fatal("not found")
		}
	}
}
