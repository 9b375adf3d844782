package webhooktest_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
	stripewebhook "github.com/stripe/stripe-go/v76/webhook"

	"github.com/billkit/billkit/webhook"
	"github.com/billkit/billkit/webhook/webhooktest"
)

func TestNewEventShape(t *testing.T) {
	t.Parallel()
	created := time.Unix(1767225600, 0)
	p := webhooktest.NewEvent(stripe.EventTypeCustomerSubscriptionUpdated,
		json.RawMessage(`{"id":"sub_1","object":"subscription","status":"active"}`),
		webhooktest.WithID("evt_1"), webhooktest.WithCreated(created), webhooktest.WithLivemode(true),
		webhooktest.WithAccount("acct_1"), webhooktest.WithAPIVersion("2022-11-15"),
		webhooktest.WithPreviousAttributes(map[string]any{"status": "trialing"}))
	var ev stripe.Event
	if err := json.Unmarshal(p, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.ID != "evt_1" || ev.Object != "event" || ev.Type != stripe.EventTypeCustomerSubscriptionUpdated ||
		ev.Created != created.Unix() || !ev.Livemode || ev.Account != "acct_1" || ev.APIVersion != "2022-11-15" {
		t.Fatalf("event = %+v", ev)
	}
	if ev.Data.Object["id"] != "sub_1" || ev.Data.PreviousAttributes["status"] != "trialing" {
		t.Fatalf("data = %+v", ev.Data)
	}
	if got := webhooktest.EventID(p); got != "evt_1" {
		t.Fatalf("EventID = %q", got)
	}

	// Defaults: a fresh id each time, stripe-go's version, now, test mode.
	a := webhooktest.NewEvent("x.y", map[string]any{"id": "o"})
	b := webhooktest.NewEvent("x.y", map[string]any{"id": "o"})
	var ea, eb stripe.Event
	_ = json.Unmarshal(a, &ea)
	_ = json.Unmarshal(b, &eb)
	if ea.ID == eb.ID || ea.ID == "" || ea.APIVersion != stripe.APIVersion || ea.Livemode || time.Since(time.Unix(ea.Created, 0)) > time.Minute {
		t.Fatalf("defaults: %+v and %+v", ea, eb)
	}

	// A stripe-go value is encoded.
	c := webhooktest.NewEvent(stripe.EventTypeInvoicePaid, &stripe.Invoice{ID: "in_1", AmountPaid: 500})
	var ec stripe.Event
	_ = json.Unmarshal(c, &ec)
	var inv stripe.Invoice
	if err := json.Unmarshal(ec.Data.Raw, &inv); err != nil || inv.ID != "in_1" || inv.AmountPaid != 500 {
		t.Fatalf("invoice round trip = %+v, %v", inv, err)
	}
}

func TestNewEventPanicsOnNonObject(t *testing.T) {
	t.Parallel()
	for _, obj := range []any{"a string", []int{1}, []byte(`not json`), make(chan int), nil} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewEvent(%T) did not panic", obj)
				}
			}()
			webhooktest.NewEvent("x.y", obj)
		}()
	}
}

func TestSignAndRequest(t *testing.T) {
	t.Parallel()
	p := []byte(`{"id":"evt_1"}`)
	now := time.Now()
	h := webhooktest.Sign("whsec_a", p, now)
	if err := stripewebhook.ValidatePayloadWithTolerance(p, h, "whsec_a", time.Minute); err != nil {
		t.Fatalf("stripe-go rejects Sign's header: %v", err)
	}
	if err := stripewebhook.ValidatePayloadWithTolerance(p, h, "whsec_b", time.Minute); err == nil {
		t.Fatal("another secret verifies")
	}
	r := webhooktest.Request("whsec_a", p)
	if r.Method != http.MethodPost || r.Header.Get("Stripe-Signature") == "" || r.ContentLength != int64(len(p)) {
		t.Fatalf("request = %s %v len %d", r.Method, r.Header, r.ContentLength)
	}
	old := webhooktest.RequestAt("whsec_a", p, now.Add(-time.Hour))
	if err := stripewebhook.ValidatePayloadWithTolerance(p, old.Header.Get("Stripe-Signature"), "whsec_a", time.Minute); err != stripewebhook.ErrTooOld {
		t.Fatalf("RequestAt an hour ago: %v, want ErrTooOld", err)
	}
}

// recorder answers 200 and records the order of event IDs it saw.
type recorder struct {
	ids     chan string
	running atomic.Int64
	peak    atomic.Int64
	gate    chan struct{}
	entered chan struct{} // receives one value per delivery that entered, when not nil
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	n := r.running.Add(1)
	defer r.running.Add(-1)
	for {
		p := r.peak.Load()
		if n <= p || r.peak.CompareAndSwap(p, n) {
			break
		}
	}
	if r.entered != nil {
		r.entered <- struct{}{}
	}
	if r.gate != nil {
		<-r.gate
	}
	var ev struct{ ID string }
	_ = json.NewDecoder(req.Body).Decode(&ev)
	r.ids <- ev.ID
	w.WriteHeader(http.StatusOK)
}

func TestDeliverer(t *testing.T) {
	t.Parallel()
	events := make([][]byte, 5)
	for i := range events {
		events[i] = webhooktest.NewEvent("x.y", map[string]any{"id": "o"}, webhooktest.WithID(string(rune('a'+i))))
	}
	order := func(d webhooktest.Deliverer) []string {
		res := d.Deliver(t, &recorder{ids: make(chan string, 100)}, events...)
		var ids []string
		for _, r := range res {
			if r.Status != http.StatusOK || r.EventID != string(rune('a'+r.Event)) {
				t.Fatalf("result %+v", r)
			}
			ids = append(ids, r.EventID)
		}
		return ids
	}
	plain := order(webhooktest.Deliverer{Secret: "s", Copies: 2})
	if want := []string{"a", "a", "b", "b", "c", "c", "d", "d", "e", "e"}; !slices.Equal(plain, want) {
		t.Fatalf("unshuffled order %v, want %v", plain, want)
	}
	s1 := order(webhooktest.Deliverer{Secret: "s", Copies: 2, Shuffle: true, Seed: 1})
	s1again := order(webhooktest.Deliverer{Secret: "s", Copies: 2, Shuffle: true, Seed: 1})
	s2 := order(webhooktest.Deliverer{Secret: "s", Copies: 2, Shuffle: true, Seed: 2})
	if !slices.Equal(s1, s1again) {
		t.Fatalf("same seed, different orders: %v, %v", s1, s1again)
	}
	if slices.Equal(s1, s2) || slices.Equal(s1, plain) {
		t.Fatalf("shuffle did not change the order: %v %v %v", s1, s2, plain)
	}
	sorted := slices.Clone(s1)
	slices.Sort(sorted)
	if !slices.Equal(sorted, plain) {
		t.Fatalf("shuffled deliveries %v are not a permutation of %v", s1, plain)
	}

	// Concurrency: all deliveries of a batch are in the handler at once.
	rec := &recorder{ids: make(chan string, 100), gate: make(chan struct{}), entered: make(chan struct{}, 10)}
	done := make(chan webhooktest.Results)
	go func() {
		done <- (webhooktest.Deliverer{Secret: "s", Copies: 2, Concurrency: 10}).Deliver(t, rec, events...)
	}()
	for range 10 { // all ten are in the handler, held at the gate
		<-rec.entered
	}
	close(rec.gate)
	res := <-done
	if rec.peak.Load() != 10 || res.Count(http.StatusOK) != 10 || len(res.ForEvent(3)) != 2 {
		t.Fatalf("peak %d, %d×200, %d results for event 3", rec.peak.Load(), res.Count(200), len(res.ForEvent(3)))
	}
}

func TestDeliverSignsWithTheSecret(t *testing.T) {
	t.Parallel()
	var verified atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body json.RawMessage
		_ = json.NewDecoder(r.Body).Decode(&body)
		if stripewebhook.ValidatePayload(body, r.Header.Get("Stripe-Signature"), "whsec_a") == nil {
			verified.Add(1)
		}
		w.WriteHeader(http.StatusAccepted)
	})
	got := webhooktest.Deliver(t, h, "whsec_a", webhooktest.NewEvent("x.y", map[string]any{"id": "o"}))
	if !slices.Equal(got, []int{http.StatusAccepted}) || verified.Load() != 1 {
		t.Fatalf("statuses %v, verified %d", got, verified.Load())
	}
}

func TestContextWithToken(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	if tok, ok := webhook.TokenFromContext(ctx); ok || tok != "" {
		t.Fatalf("no token: TokenFromContext = %q, %v; want none", tok, ok)
	}
	if tok, ok := webhook.TokenFromContext(webhooktest.ContextWithToken(ctx, "")); ok {
		t.Fatalf("empty token: TokenFromContext = %q, %v; want none", tok, ok)
	}
	if tok, ok := webhook.TokenFromContext(webhooktest.ContextWithToken(ctx, "tok_1")); !ok || tok != "tok_1" {
		t.Fatalf("TokenFromContext = %q, %v; want tok_1", tok, ok)
	}
}
