package billkitotel_test

import (
	"context"
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
