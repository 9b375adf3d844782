package webhook_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
	stripewebhook "github.com/stripe/stripe-go/v76/webhook"

	"github.com/billkit/billkit/webhook"
	"github.com/billkit/billkit/webhook/webhooktest"
)

// FuzzHandler feeds arbitrary Stripe-Signature headers and bodies to the
// Handler: it must never panic, answer only statuses it documents, and run a
// handler only for a body validly signed with the secret.
func FuzzHandler(f *testing.F) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	valid := invoice("evt_fuzz")
	f.Add(webhooktest.Sign(secret, valid, now), valid)
	f.Add(webhooktest.Sign(secret, valid, now.Add(-time.Hour)), valid)
	f.Add(webhooktest.Sign("whsec_other", valid, now), valid)
	f.Add(webhooktest.Sign(secret, []byte(`{}`), now), []byte(`{}`))
	f.Add(webhooktest.Sign(secret, []byte(`{"id":"evt_1","type":"invoice.paid","data":null}`), now), []byte(`{"id":"evt_1","type":"invoice.paid","data":null}`))
	f.Add(webhooktest.Sign(secret, []byte(`not json`), now), []byte(`not json`))
	f.Add("", valid)
	f.Add("t=,v1=", valid)
	f.Add("t=1772366400,v1=00", valid)
	f.Add("t=1772366400,t=1,v1=zz,v0=aa,,=", []byte{})
	f.Add("t=99999999999999999999999,v1=ab", []byte("{"))

	clock := func() time.Time { return now }
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		var calls int
		h, err := webhook.New(webhook.Config{
			Secrets: []string{secret},
			Store:   webhook.NewMemoryStore(clock),
			Now:     clock,
		})
		if err != nil {
			t.Fatal(err)
		}
		h.OnAny(func(context.Context, *stripe.Event) error { calls++; return nil })
		r := httptest.NewRequest(http.MethodPost, "/webhook", bytes.NewReader(body))
		r.Header.Set("Stripe-Signature", header)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)

		switch rec.Code {
		case http.StatusOK, http.StatusBadRequest:
		default:
			t.Fatalf("status %d for header %q", rec.Code, header)
		}
		if calls > 0 && stripewebhook.ValidatePayloadIgnoringTolerance(body, header, secret) != nil {
			t.Fatalf("handler ran for a body not signed with the secret (header %q)", header)
		}
		if calls > 0 && rec.Code != http.StatusOK {
			t.Fatalf("handler ran but status %d", rec.Code)
		}
	})
}
