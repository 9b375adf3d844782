package checkout_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/billkit/billkit/checkout"
)

// TestObserverOutcomes checks one observation per request, with the
// endpoint, the catalog's tier once known, the status answered and a
// duration: a session created, Stripe failing, an unknown tier, no
// subject, a portal session and a portal without a customer.
func TestObserverOutcomes(t *testing.T) {
	t.Parallel()
	fail := false
	var mu sync.Mutex
	fake := newFakeStripe(t, func(n int, w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		f := fail
		mu.Unlock()
		if f {
			stripeError(w, 402, "req_card", "card_error", "card_declined", "Your card was declined.")
			return
		}
		okSession(n, w, r)
	})
	var obsMu sync.Mutex
	var got []checkout.Observation
	h := newHandler(t, testConfig(t, newStripeClient(fake.URL, 0)), func(c *checkout.HandlerConfig) {
		c.Observer = checkout.Observer{Served: func(_ context.Context, o checkout.Observation) {
			obsMu.Lock()
			got = append(got, o)
			obsMu.Unlock()
		}}
	})
	steps := []struct {
		call   call
		stripe bool // Stripe fails
		want   checkout.Observation
	}{
		{call: call{subject: "alice", body: `{"tier":"PRO"}`}, want: checkout.Observation{Op: checkout.OpCheckout, Tier: "pro", Status: 200}},
		{call: call{subject: "alice", body: `{"tier":"pro"}`}, stripe: true, want: checkout.Observation{Op: checkout.OpCheckout, Tier: "pro", Status: 502}},
		{call: call{subject: "alice", body: `{"tier":"gold"}`}, want: checkout.Observation{Op: checkout.OpCheckout, Status: 400}},
		{call: call{body: `{"tier":"pro"}`}, want: checkout.Observation{Op: checkout.OpCheckout, Status: 401}},
		{call: call{path: "portal", subject: "carol"}, want: checkout.Observation{Op: checkout.OpPortal, Status: 200}},
		{call: call{path: "portal", subject: "alice"}, want: checkout.Observation{Op: checkout.OpPortal, Status: 409}},
	}
	for i, s := range steps {
		mu.Lock()
		fail = s.stripe
		mu.Unlock()
		w := s.call.do(h)
		obsMu.Lock()
		if len(got) != i+1 {
			t.Fatalf("step %d: %d observations, want %d", i, len(got), i+1)
		}
		o := got[i]
		obsMu.Unlock()
		if o.Duration <= 0 || o.Status != w.Code {
			t.Errorf("step %d: observed %+v, answered %d", i, o, w.Code)
		}
		o.Duration = 0
		if o != s.want {
			t.Errorf("step %d: observed %+v, want %+v", i, o, s.want)
		}
	}
}

// TestObserverKeepsTooLargeClose checks that observing does not hide a
// body over the limit from the server: it still closes the connection
// after the 413, as it does without an observer.
func TestObserverKeepsTooLargeClose(t *testing.T) {
	t.Parallel()
	fake := newFakeStripe(t, nil)
	for _, observed := range []bool{false, true} {
		h := newHandler(t, testConfig(t, newStripeClient(fake.URL, 0)), func(c *checkout.HandlerConfig) {
			c.MaxBodyBytes = 64
			if observed {
				c.Observer = checkout.Observer{Served: func(context.Context, checkout.Observation) {}}
			}
		})
		srv := httptest.NewServer(h)
		body := io.MultiReader(strings.NewReader(`{"tier":"pro","email":"`), strings.NewReader(strings.Repeat("a", 1000)+`"}`))
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/billing/checkout", body)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(subjectHeader, "alice")
		resp, err := srv.Client().Do(req)
		if err != nil {
			srv.Close()
			t.Fatalf("observed=%v: %v", observed, err)
		}
		resp.Body.Close()
		srv.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !resp.Close {
			t.Errorf("observed=%v: status %d, Connection: close %v; want 413 and close", observed, resp.StatusCode, resp.Close)
		}
	}
}
