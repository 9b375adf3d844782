package billkitotel_test

import (
	"bytes"
	"context"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
	"github.com/stripe/stripe-go/v76/form"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// TestWrapBackendCalls makes a call through each method of the backend
// (Call, CallRaw, CallMultipart, CallStreaming) and checks its span: its
// parent is the span of the params' context, its name and attributes
// those of the route.
func TestWrapBackendCalls(t *testing.T) {
	t.Parallel()
	fake := newFakeStripe(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v1/subscriptions":
			writeJSON(w, 200, map[string]any{"object": "list", "url": "/v1/subscriptions", "data": []any{}})
		case strings.HasSuffix(r.URL.Path, "/pdf"):
			w.Header().Set("Request-Id", "req_fake123")
			w.Write([]byte("%PDF-1.4"))
		default:
			writeJSON(w, 200, map[string]any{"id": "x", "object": "unknown"})
		}
	})
	tests := []struct {
		name, span string
		call       func(ctx context.Context, api *client.API) error
	}{{
		"Call", "stripe POST /v1/subscriptions/{id}",
		func(ctx context.Context, api *client.API) error {
			_, err := api.Subscriptions.Update("sub_1NxyzABCdefGHIjk", &stripe.SubscriptionParams{
				Params: stripe.Params{Context: ctx}, CancelAtPeriodEnd: stripe.Bool(true)})
			return err
		},
	}, {
		"CallRaw", "stripe GET /v1/subscriptions",
		func(ctx context.Context, api *client.API) error {
			it := api.Subscriptions.List(&stripe.SubscriptionListParams{ListParams: stripe.ListParams{Context: ctx}})
			for it.Next() {
			}
			return it.Err()
		},
	}, {
		"CallMultipart", "stripe POST /v1/files",
		func(ctx context.Context, api *client.API) error {
			_, err := api.Files.New(&stripe.FileParams{Params: stripe.Params{Context: ctx},
				FileReader: strings.NewReader("receipt"), Filename: stripe.String("receipt.txt"), Purpose: stripe.String("dispute_evidence")})
			return err
		},
	}, {
		"CallStreaming", "stripe GET /v1/quotes/{id}/pdf",
		func(ctx context.Context, api *client.API) error {
			s, err := api.Quotes.PDF("qt_1Mr7wVLkdIwHu7ixpbs5Ex1z", &stripe.QuotePDFParams{Params: stripe.Params{Context: ctx}})
			if err == nil {
				s.LastResponse.Body.Close()
			}
			return err
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tm := newTelemetry(t)
			ctx, parent := tm.tp.Tracer("test").Start(context.Background(), "parent")
			if err := tt.call(ctx, fake.client(tm)); err != nil {
				t.Fatal(err)
			}
			parent.End()
			spans := tm.spans.Ended()
			if len(spans) != 2 {
				t.Fatalf("%d spans, want 2", len(spans))
			}
			s := spans[0]
			if s.Name() != tt.span || s.SpanKind() != trace.SpanKindClient || s.Status().Code != codes.Unset {
				t.Errorf("span %q %v %v, want %q client unset", s.Name(), s.SpanKind(), s.Status().Code, tt.span)
			}
			if s.Parent().SpanID() != parent.SpanContext().SpanID() {
				t.Errorf("span's parent %v, want %v", s.Parent().SpanID(), parent.SpanContext().SpanID())
			}
			method, route, _ := strings.Cut(strings.TrimPrefix(tt.span, "stripe "), " ")
			want := map[string]string{"http.request.method": method, "url.template": route,
				"http.response.status_code": "200", "stripe.request_id": "req_fake123"}
			if got := spanAttrs(s.Attributes()); !maps.Equal(got, want) {
				t.Errorf("span attributes %v, want %v", got, want)
			}
			checkSums(t, tm, "billkit.stripe.requests", map[string]int64{
				"http.request.method=" + method + ",http.response.status_code=200,url.template=" + route: 1,
			})
			checkCounts(t, tm, "billkit.stripe.request.duration", map[string]uint64{
				"http.request.method=" + method + ",http.response.status_code=200,url.template=" + route: 1,
			})
		})
	}
}

// TestWrapBackendErrors checks the labels of failed calls: Stripe's error
// answers, and contexts that ended before an answer.
func TestWrapBackendErrors(t *testing.T) {
	t.Parallel()
	fake := newFakeStripe(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 404, stripeError("invalid_request_error", "No such customer: 'cus_NffrFeUfNV2Hib'"))
	})
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name  string
		ctx   context.Context
		attrs map[string]string
	}{
		{"stripe error", context.Background(), map[string]string{"http.response.status_code": "404", "error.type": "404", "stripe.request_id": "req_fake123"}},
		{"deadline", expired, map[string]string{"error.type": "timeout"}},
		{"canceled", canceled, map[string]string{"error.type": "canceled"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tm := newTelemetry(t)
			_, err := fake.client(tm).Customers.Get("cus_NffrFeUfNV2Hib", &stripe.CustomerParams{Params: stripe.Params{Context: tt.ctx}})
			if err == nil {
				t.Fatal("call succeeded")
			}
			spans := tm.spans.Ended()
			if len(spans) != 1 {
				t.Fatalf("%d spans, want 1", len(spans))
			}
			s := spans[0]
			want := map[string]string{"http.request.method": "GET", "url.template": "/v1/customers/{id}"}
			maps.Copy(want, tt.attrs)
			if got := spanAttrs(s.Attributes()); !maps.Equal(got, want) {
				t.Errorf("span attributes %v, want %v", got, want)
			}
			if s.Status().Code != codes.Error || exceptions(s) != 1 {
				t.Errorf("span status %v with %d exceptions, want Error with 1", s.Status().Code, exceptions(s))
			}
			delete(want, "stripe.request_id")
			got := tm.sums(t, "billkit.stripe.requests")
			if len(got) != 1 {
				t.Fatalf("billkit.stripe.requests %v, want one point", got)
			}
			for k, n := range got {
				if wantKey := encode(want); k != wantKey || n != 1 {
					t.Errorf("billkit.stripe.requests %s: %d, want %s: 1", k, n, wantKey)
				}
			}
			tm.assertNowhere(t, false, "cus_NffrFeUfNV2Hib", "No such customer")
		})
	}
}

// encode returns m as an encoded attribute set: "k=v,k=v", sorted.
func encode(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + m[k])
	}
	return b.String()
}

// recordingBackend is a stripe.Backend that records its network retries
// and answers nothing.
type recordingBackend struct {
	stripe.Backend
	retries int64
}

func (b *recordingBackend) SetMaxNetworkRetries(n int64) { b.retries = n }
func (b *recordingBackend) Call(string, string, string, stripe.ParamsContainer, stripe.LastResponseSetter) error {
	return nil
}
func (b *recordingBackend) CallRaw(string, string, string, *form.Values, *stripe.Params, stripe.LastResponseSetter) error {
	return nil
}
func (b *recordingBackend) CallMultipart(string, string, string, string, *bytes.Buffer, *stripe.Params, stripe.LastResponseSetter) error {
	return nil
}

// TestWrapBackendDelegates checks what the wrapper passes on as it is:
// nil, the retries, and params without a context (or none at all).
func TestWrapBackendDelegates(t *testing.T) {
	t.Parallel()
	tm := newTelemetry(t)
	if b := tm.WrapBackend(nil); b != nil {
		t.Errorf("WrapBackend(nil) = %v, want nil", b)
	}
	rec := &recordingBackend{}
	b := tm.WrapBackend(rec)
	b.SetMaxNetworkRetries(3)
	if rec.retries != 3 {
		t.Errorf("retries %d, want 3", rec.retries)
	}
	// No params, a nil pointer of params, params without a context: each
	// call starts a trace of its own.
	b.Call("GET", "/v1/balance", "sk", nil, &stripe.Balance{})
	b.Call("GET", "/v1/balance", "sk", (*stripe.BalanceParams)(nil), &stripe.Balance{})
	b.CallRaw("GET", "/v1/balance", "sk", nil, nil, &stripe.Balance{})
	b.CallMultipart("POST", "/v1/files", "sk", "x", nil, &stripe.Params{}, &stripe.File{})
	spans := tm.spans.Ended()
	if len(spans) != 4 {
		t.Fatalf("%d spans, want 4", len(spans))
	}
	for _, s := range spans {
		if s.Parent().IsValid() {
			t.Errorf("span %s has a parent", s.Name())
		}
	}
	// No response was stored: no status code.
	checkSums(t, tm, "billkit.stripe.requests", map[string]int64{
		"http.request.method=GET,url.template=/v1/balance": 3,
		"http.request.method=POST,url.template=/v1/files":  1,
	})
}
