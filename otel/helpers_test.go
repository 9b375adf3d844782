package billkitotel_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	billkitotel "github.com/billkit/billkit/otel"
)

// telemetry is an Instruments recording into an in-memory metric reader
// and span recorder.
type telemetry struct {
	*billkitotel.Instruments
	reader *sdkmetric.ManualReader
	spans  *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
}

func newTelemetry(t testing.TB) *telemetry {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	ins, err := billkitotel.New(billkitotel.Config{
		MeterProvider:  sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
		TracerProvider: tp,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &telemetry{Instruments: ins, reader: reader, spans: spans, tp: tp}
}

// collect returns every metric recorded so far.
func (tm *telemetry) collect(t testing.TB) []metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := tm.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var out []metricdata.Metrics
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != billkitotel.ScopeName || sm.Scope.Version != billkitotel.Version {
			t.Errorf("scope %s %s, want %s %s", sm.Scope.Name, sm.Scope.Version, billkitotel.ScopeName, billkitotel.Version)
		}
		out = append(out, sm.Metrics...)
	}
	return out
}

// metric returns the metric named name, failing t when there is none.
func (tm *telemetry) metric(t testing.TB, name string) metricdata.Metrics {
	t.Helper()
	for _, m := range tm.collect(t) {
		if m.Name == name {
			return m
		}
	}
	t.Fatalf("no metric %s", name)
	return metricdata.Metrics{}
}

// key encodes an attribute set as "k=v,k=v", sorted by key.
func key(s attribute.Set) string { return s.Encoded(attribute.DefaultEncoder()) }

// sums returns the points of the Int64 counter name by attribute set.
func (tm *telemetry) sums(t testing.TB, name string) map[string]int64 {
	t.Helper()
	m := tm.metric(t, name)
	sum, ok := m.Data.(metricdata.Sum[int64])
	if !ok {
		t.Fatalf("%s is a %T, want an int64 sum", name, m.Data)
	}
	if !sum.IsMonotonic {
		t.Errorf("%s is not monotonic", name)
	}
	out := map[string]int64{}
	for _, p := range sum.DataPoints {
		out[key(p.Attributes)] = p.Value
	}
	return out
}

// counts returns the number of values recorded in the histogram name by
// attribute set, checking its unit is seconds.
func (tm *telemetry) counts(t testing.TB, name string) map[string]uint64 {
	t.Helper()
	m := tm.metric(t, name)
	if m.Unit != "s" {
		t.Errorf("%s unit %q, want s", name, m.Unit)
	}
	h, ok := m.Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("%s is a %T, want a float64 histogram", name, m.Data)
	}
	out := map[string]uint64{}
	for _, p := range h.DataPoints {
		// The SDK's default bounds (0 to 10000) suit milliseconds.
		if len(p.Bounds) == 0 || p.Bounds[0] >= 1 || p.Bounds[len(p.Bounds)-1] > 600 {
			t.Errorf("%s bounds %v, want explicit ones in seconds", name, p.Bounds)
		}
		out[key(p.Attributes)] = p.Count
	}
	return out
}

// gauges returns the last values of the Int64 gauge name by attribute set.
func (tm *telemetry) gauges(t testing.TB, name string) map[string]int64 {
	t.Helper()
	m := tm.metric(t, name)
	g, ok := m.Data.(metricdata.Gauge[int64])
	if !ok {
		t.Fatalf("%s is a %T, want an int64 gauge", name, m.Data)
	}
	out := map[string]int64{}
	for _, p := range g.DataPoints {
		out[key(p.Attributes)] = p.Value
	}
	return out
}

// assertNowhere fails t when any of secrets appears in a metric's
// attributes, or (unless onSpans is false) in a span's name, attributes
// or events.
func (tm *telemetry) assertNowhere(t testing.TB, onSpans bool, secrets ...string) {
	t.Helper()
	check := func(where, s string) {
		for _, secret := range secrets {
			if strings.Contains(s, secret) {
				t.Errorf("%s holds %q: %s", where, secret, s)
			}
		}
	}
	for _, m := range tm.collect(t) {
		var sets []attribute.Set
		switch d := m.Data.(type) {
		case metricdata.Sum[int64]:
			for _, p := range d.DataPoints {
				sets = append(sets, p.Attributes)
			}
		case metricdata.Histogram[float64]:
			for _, p := range d.DataPoints {
				sets = append(sets, p.Attributes)
			}
		case metricdata.Gauge[int64]:
			for _, p := range d.DataPoints {
				sets = append(sets, p.Attributes)
			}
		default:
			t.Errorf("%s: unexpected data %T", m.Name, m.Data)
		}
		for _, s := range sets {
			check("metric "+m.Name, key(s))
		}
	}
	if !onSpans {
		return
	}
	for _, s := range tm.spans.Ended() {
		check("span name", s.Name())
		for _, kv := range s.Attributes() {
			check("span "+s.Name(), string(kv.Key)+"="+kv.Value.Emit())
		}
		for _, e := range s.Events() {
			for _, kv := range e.Attributes {
				check("span event "+e.Name, string(kv.Key)+"="+kv.Value.Emit())
			}
		}
	}
}

// spanAttrs returns the attributes of a span as a map.
func spanAttrs(kvs []attribute.KeyValue) map[string]string {
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		out[string(kv.Key)] = kv.Value.Emit()
	}
	return out
}

// fakeStripe is an httptest.Server standing in for api.stripe.com.
type fakeStripe struct {
	*httptest.Server
}

// newFakeStripe starts a server answering with h; it is closed when the
// test ends.
func newFakeStripe(t testing.TB, h http.HandlerFunc) *fakeStripe {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return &fakeStripe{s}
}

// client returns a Stripe client whose calls go to the server through
// backends wrapped by tm, without network retries.
func (f *fakeStripe) client(tm *telemetry) *client.API {
	cfg := &stripe.BackendConfig{
		URL:               stripe.String(f.URL),
		MaxNetworkRetries: stripe.Int64(0),
		LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull},
	}
	return client.New("sk_test_123", &stripe.Backends{
		API:     tm.WrapBackend(stripe.GetBackendWithConfig(stripe.APIBackend, cfg)),
		Connect: tm.WrapBackend(stripe.GetBackendWithConfig(stripe.ConnectBackend, cfg)),
		Uploads: tm.WrapBackend(stripe.GetBackendWithConfig(stripe.UploadsBackend, cfg)),
	})
}

// writeJSON answers v as JSON with status, and a Request-Id as Stripe
// sends.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Request-Id", "req_fake123")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// stripeError is the body of a Stripe error answer.
func stripeError(typ, msg string) map[string]any {
	return map[string]any{"error": map[string]string{"type": typ, "message": msg}}
}
