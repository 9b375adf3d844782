package billkitotel_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	billkitotel "github.com/billkit/billkit/otel"
	"github.com/billkit/billkit/quota"
)

// BenchmarkQuotaObserver measures one observed quota decision recorded
// into a real SDK MeterProvider (its cost on the middleware's hot path),
// after its attribute sets were built by the first call.
func BenchmarkQuotaObserver(b *testing.B) {
	ins, err := billkitotel.New(billkitotel.Config{
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader())),
	})
	if err != nil {
		b.Fatal(err)
	}
	obs := ins.Quota()
	ctx := context.Background()
	o := quota.Observation{Outcome: quota.Allowed, Plan: "pro", Meter: "requests", Duration: 300 * time.Microsecond}
	obs.Decided(ctx, o)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		obs.Decided(ctx, o)
	}
}

// TestQuotaObserverAllocs keeps an observed decision free of allocations
// once its attribute sets are built.
func TestQuotaObserverAllocs(t *testing.T) {
	ins, err := billkitotel.New(billkitotel.Config{
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader())),
	})
	if err != nil {
		t.Fatal(err)
	}
	obs := ins.Quota()
	ctx := context.Background()
	o := quota.Observation{Outcome: quota.Allowed, Plan: "pro", Meter: "requests", Duration: 300 * time.Microsecond, SoftLimitCrossed: true}
	obs.Decided(ctx, o)
	if n := testing.AllocsPerRun(100, func() { obs.Decided(ctx, o) }); n != 0 {
		t.Errorf("%v allocations per observed decision, want 0", n)
	}
}

// BenchmarkMiddleware measures one allowed request through the quota
// middleware on a memory store, without an observer (Unobserved) and with
// this package's (OpenTelemetry, into a real SDK MeterProvider): the
// cost of observing on the hot path, allocations included.
//
//	cd otel && go test -run '^$' -bench BenchmarkMiddleware -benchmem -count 6 . | tee mw.txt
//	benchstat -col /observer mw.txt
func BenchmarkMiddleware(b *testing.B) {
	for _, tc := range []struct {
		name string
		obs  func(b *testing.B) quota.Observer
	}{
		{"Unobserved", func(*testing.B) quota.Observer { return quota.Observer{} }},
		{"OpenTelemetry", func(b *testing.B) quota.Observer {
			ins, err := billkitotel.New(billkitotel.Config{
				MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader())),
			})
			if err != nil {
				b.Fatal(err)
			}
			return ins.Quota()
		}},
	} {
		b.Run("observer="+tc.name, func(b *testing.B) {
			m, err := quota.New(quota.Config{
				Subject:  func(*http.Request) (string, error) { return "alice", nil },
				Limits:   quota.StaticLimits{Plan: "pro", Overage: true},
				Store:    quota.NewMemoryStore(quota.MemoryOptions{}),
				Deadline: time.Hour, // measures cost: a slow machine must not turn into 503s
				Observer: tc.obs(b),
			})
			if err != nil {
				b.Fatal(err)
			}
			h := m.Handle(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
			r := httptest.NewRequest(http.MethodGet, "/v1/thing", nil)
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != http.StatusOK {
					b.Fatalf("status %d", w.Code)
				}
			}
		})
	}
}
