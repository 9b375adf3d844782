package billkitotel_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/billkit/billkit/checkout"
)

// TestCheckoutOutcomes drives the checkout handler through a session
// created, Stripe refusing, an unknown tier and a portal request of a
// subject without a customer, and checks each data point: endpoint, plan
// once the catalog knew it, status; and neither subject nor customer.
func TestCheckoutOutcomes(t *testing.T) {
	t.Parallel()
	tm := newTelemetry(t)
	fake := newFakeStripe(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.PostFormValue("customer_email"), "declined") {
			writeJSON(w, 402, map[string]any{"error": map[string]any{"type": "card_error", "message": "declined"}})
			return
		}
		writeJSON(w, 200, map[string]any{"id": "cs_test_1", "object": "checkout.session", "url": "https://checkout.stripe.com/c/pay/cs_test_1"})
	})
	prices, err := checkout.NewPrices(checkout.Tier{Name: "pro", PriceID: "price_pro"})
	if err != nil {
		t.Fatal(err)
	}
	sessions, err := checkout.New(checkout.Config{Stripe: fake.client(tm), Catalog: prices,
		SuccessURL: "https://example.com/ok", CancelURL: "https://example.com/cancel", PortalReturnURL: "https://example.com/account"})
	if err != nil {
		t.Fatal(err)
	}
	h, err := checkout.NewHandler(checkout.HandlerConfig{
		Sessions: sessions,
		Subject:  func(*http.Request) (string, error) { return "subject_alice", nil },
		Customer: func(context.Context, string) (string, error) { return "", checkout.ErrNoCustomer },
		Observer: tm.Checkout(),
		Logger:   quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	post := func(path, body string, want int) {
		t.Helper()
		r := httptest.NewRequest(http.MethodPost, "/billing/"+path, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != want {
			t.Fatalf("POST %s %s answered %d, want %d: %s", path, body, w.Code, want, w.Body)
		}
	}
	post("checkout", `{"tier":"pro"}`, 200)
	post("checkout", `{"tier":"pro","email":"declined@example.com"}`, 502)
	post("checkout", `{"tier":"gold"}`, 400)
	post("portal", ``, 409)

	want := map[string]int64{
		"billkit.operation=checkout,billkit.plan=pro,http.response.status_code=200": 1,
		"billkit.operation=checkout,billkit.plan=pro,http.response.status_code=502": 1,
		"billkit.operation=checkout,http.response.status_code=400":                  1,
		"billkit.operation=portal,http.response.status_code=409":                    1,
	}
	checkSums(t, tm, "billkit.checkout.requests", want)
	wantDur := map[string]uint64{}
	for k, v := range want {
		wantDur[k] = uint64(v)
	}
	checkCounts(t, tm, "billkit.checkout.request.duration", wantDur)
	tm.assertNowhere(t, false, "subject_alice", "declined@", "gold")
}
