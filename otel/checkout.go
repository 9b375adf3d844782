package billkitotel

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/billkit/billkit/checkout"
)

// checkoutInstruments are the checkout handler's instruments.
type checkoutInstruments struct {
	requests metric.Int64Counter
	duration metric.Float64Histogram
}

func (c *checkoutInstruments) init(m metric.Meter) error {
	s := instrumentSet{m: m}
	c.requests = s.counter("billkit.checkout.requests", "{request}",
		"Requests to the checkout and billing-portal endpoints, by endpoint, plan and status.")
	c.duration = s.histogram("billkit.checkout.request.duration",
		"Duration of a request to the checkout or billing-portal endpoint, Stripe's call included.", callBuckets())
	return s.err()
}

// Checkout returns an observer for checkout.HandlerConfig.Observer. It
// records billkit.checkout.requests and billkit.checkout.request.duration,
// labelled with billkit.operation (checkout or portal), billkit.plan (the
// catalog's tier, once known) and http.response.status_code: 502 and 504
// are Stripe failing, a sale that did not start.
func (ins *Instruments) Checkout() checkout.Observer {
	c := &ins.checkout
	return checkout.Observer{Served: c.served}
}

func (c *checkoutInstruments) served(ctx context.Context, o checkout.Observation) {
	kvs := appendIf(append(make([]attribute.KeyValue, 0, 3), KeyOperation.String(o.Op), semconv.HTTPResponseStatusCode(o.Status)), KeyPlan, o.Tier)
	opt := metric.WithAttributes(kvs...)
	c.requests.Add(ctx, 1, opt)
	c.duration.Record(ctx, o.Duration.Seconds(), opt)
}
