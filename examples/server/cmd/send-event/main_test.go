package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stripe/stripe-go/v76"

	"github.com/billkit/billkit/examples/server/internal/demo"
	"github.com/billkit/billkit/webhook"
)

// TestSendEvent sends every kind of event to a verifying webhook handler.
func TestSendEvent(t *testing.T) {
	t.Parallel()
	const secret = "whsec_send_event_test"
	h, err := webhook.New(webhook.Config{Secrets: []string{secret}, Store: webhook.NewMemoryStore(webhook.MemoryOptions{})})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []*stripe.Event
	h.OnAny(func(_ context.Context, ev *stripe.Event) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, ev)
		return nil
	})
	srv := httptest.NewServer(h)
	defer srv.Close()

	environ := []string{"STRIPE_WEBHOOK_SECRET=" + secret}
	for _, kind := range demo.Kinds() {
		var out bytes.Buffer
		args := []string{"-url", srv.URL, kind, "-subject", "alice", "-tier", "pro"}
		if err := run(context.Background(), args, environ, &out, io.Discard); err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		if !strings.Contains(out.String(), "200 OK") {
			t.Errorf("%s: output %q", kind, out.String())
		}
	}
	if len(got) != len(demo.Kinds()) {
		t.Fatalf("handler got %d events, want %d", len(got), len(demo.Kinds()))
	}
	var sub stripe.Subscription
	if err := json.Unmarshal(got[1].Data.Raw, &sub); err != nil {
		t.Fatal(err)
	}
	if got[1].Type != stripe.EventTypeCustomerSubscriptionCreated || sub.Metadata[demo.MetadataSubject] != "alice" ||
		sub.Items.Data[0].Price.ID != demo.PricePro || sub.Customer.ID != "cus_demo_alice" {
		t.Errorf("subscription-created: %s %+v", got[1].Type, sub)
	}

	// A wrong secret is rejected by the server, and reported.
	err = run(context.Background(), []string{"-url", srv.URL, "-secret", "whsec_wrong", "invoice-paid"}, environ, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("wrong secret: %v", err)
	}
}

func TestSendEventUsageErrors(t *testing.T) {
	t.Parallel()
	var noenv []string
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no event", []string{"-secret", "whsec_x"}, "no event"},
		{"unknown event", []string{"-secret", "whsec_x", "-url", "http://127.0.0.1:1", "refund"}, "unknown event"},
		{"no secret", []string{"invoice-paid"}, "no webhook secret"},
		{"unknown tier", []string{"-secret", "whsec_x", "invoice-paid", "-tier", "gold"}, "PRICE_GOLD"},
		{"extra argument", []string{"invoice-paid", "-tier", "pro", "more"}, "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), tt.args, noenv, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestSendEventPrint(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	environ := []string{"PRICE_STARTER=price_s", "PRICE_PRO=price_p"}
	if err := run(context.Background(), []string{"-print", "-tier", "starter", "subscription-created"}, environ, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "Stripe-Signature: t=") || !strings.Contains(out.String(), `"price_s"`) {
		t.Errorf("output %q", out.String())
	}
}
