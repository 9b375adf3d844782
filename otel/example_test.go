package billkitotel_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	billkitotel "github.com/billkit/billkit/otel"
	"github.com/billkit/billkit/quota"
	"github.com/billkit/billkit/webhook"
	"github.com/billkit/billkit/webhook/webhooktest"
)

// Example counts the quota middleware's decisions. A real program leaves
// Config empty to use the global providers its OpenTelemetry setup
// installed; here a ManualReader collects the metrics to print them.
func Example() {
	reader := sdkmetric.NewManualReader()
	ins, err := billkitotel.New(billkitotel.Config{
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
	})
	if err != nil {
		panic(err)
	}
	mw, err := quota.New(quota.Config{
		// Real code reads the authenticated account, never a free header.
		Subject:  func(r *http.Request) (string, error) { return r.Header.Get("X-Account"), nil },
		Limits:   quota.StaticLimits{Plan: "free", Included: 2},
		Store:    quota.NewMemoryStore(quota.MemoryOptions{}),
		Observer: ins.Quota(),
	})
	if err != nil {
		panic(err)
	}
	api := mw.Handle(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	for _, account := range []string{"alice", "alice", "alice", ""} {
		r := httptest.NewRequest("GET", "/v1/hello", nil)
		r.Header.Set("X-Account", account)
		api.ServeHTTP(httptest.NewRecorder(), r)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		panic(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "billkit.quota.decisions" {
				continue
			}
			var lines []string
			for _, p := range m.Data.(metricdata.Sum[int64]).DataPoints {
				lines = append(lines, fmt.Sprintf("%s{%s} %d", m.Name, p.Attributes.Encoded(attribute.DefaultEncoder()), p.Value))
			}
			slices.Sort(lines)
			for _, l := range lines {
				fmt.Println(l)
			}
		}
	}
	// Output:
	// billkit.quota.decisions{billkit.meter=requests,billkit.outcome=allowed,billkit.plan=free} 2
	// billkit.quota.decisions{billkit.meter=requests,billkit.outcome=denied,billkit.plan=free} 1
	// billkit.quota.decisions{billkit.meter=requests,billkit.outcome=unauthenticated} 1
}

// ExampleInstruments_WrapBackend builds a Stripe client whose calls are
// traced and counted. An httptest.Server stands in for api.stripe.com.
func ExampleInstruments_WrapBackend() {
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Request-Id", "req_123")
		json.NewEncoder(w).Encode(map[string]any{"id": "sub_1NxyzABCdefGHIjk", "object": "subscription", "status": "active"})
	}))
	defer fake.Close()
	spans := tracetest.NewSpanRecorder()
	ins, err := billkitotel.New(billkitotel.Config{
		TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)),
	})
	if err != nil {
		panic(err)
	}

	cfg := &stripe.BackendConfig{
		URL:           stripe.String(fake.URL), // leave unset for api.stripe.com
		LeveledLogger: &stripe.LeveledLogger{Level: stripe.LevelNull},
	}
	api := client.New("sk_test_123", &stripe.Backends{
		API:     ins.WrapBackend(stripe.GetBackendWithConfig(stripe.APIBackend, cfg)),
		Connect: ins.WrapBackend(stripe.GetBackendWithConfig(stripe.ConnectBackend, cfg)),
		Uploads: ins.WrapBackend(stripe.GetBackendWithConfig(stripe.UploadsBackend, cfg)),
	})
	// The span's parent is the span of the params' context.
	sub, err := api.Subscriptions.Get("sub_1NxyzABCdefGHIjk", &stripe.SubscriptionParams{
		Params: stripe.Params{Context: context.Background()},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(sub.ID, sub.Status)
	for _, s := range spans.Ended() {
		fmt.Println(s.Name(), s.SpanKind())
		for _, kv := range s.Attributes() {
			fmt.Printf("  %s=%s\n", kv.Key, kv.Value.Emit())
		}
	}
	// Output:
	// sub_1NxyzABCdefGHIjk active
	// stripe GET /v1/subscriptions/{id} client
	//   http.request.method=GET
	//   url.template=/v1/subscriptions/{id}
	//   http.response.status_code=200
	//   stripe.request_id=req_123
}

// ExampleInstruments_Webhook traces webhook deliveries: each span is named
// after its event's type once the payload is verified.
func ExampleInstruments_Webhook() {
	spans := tracetest.NewSpanRecorder()
	ins, err := billkitotel.New(billkitotel.Config{
		TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)),
	})
	if err != nil {
		panic(err)
	}
	const secret = "whsec_example"
	h, err := webhook.New(webhook.Config{
		Secrets:  []string{secret},
		Store:    webhook.NewMemoryStore(webhook.MemoryOptions{}),
		Observer: ins.Webhook(),
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		panic(err)
	}
	h.On(stripe.EventTypeInvoicePaid, func(context.Context, *stripe.Event) error { return nil })

	paid := webhooktest.NewEvent(stripe.EventTypeInvoicePaid, map[string]any{"id": "in_123", "object": "invoice"},
		webhooktest.WithID("evt_123"))
	webhooktest.Deliver(nil, h, secret, paid, paid)
	webhooktest.Deliver(nil, h, "whsec_wrong", paid)
	for _, s := range spans.Ended() {
		var outcome, id string
		for _, kv := range s.Attributes() {
			switch kv.Key {
			case billkitotel.KeyOutcome:
				outcome = kv.Value.AsString()
			case billkitotel.KeyEventID:
				id = kv.Value.AsString()
			}
		}
		fmt.Printf("%s: outcome=%s event=%q status=%s\n", s.Name(), outcome, id, s.Status().Code)
	}
	// Output:
	// stripe webhook invoice.paid: outcome=handled event="evt_123" status=Unset
	// stripe webhook invoice.paid: outcome=duplicate event="evt_123" status=Unset
	// stripe webhook: outcome=bad_signature event="" status=Error
}
