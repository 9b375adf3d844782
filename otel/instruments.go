package billkitotel

import (
	"errors"
	"fmt"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope (meter and tracer name) of every
// instrument and span this package creates.
const ScopeName = "github.com/billkit/billkit/otel"

// Version is the version of this module, reported as the instrumentation
// scope's version.
const Version = "0.1.0"

// Attribute keys that billkit defines. The semantic-convention keys it also
// uses (http.request.method, http.response.status_code, url.template,
// error.type) come from the semconv package.
const (
	// KeyOutcome is what billkit did: a quota decision, a webhook
	// delivery, a billing event, a usage report, a reconciliation or a
	// background settle or refund (the Outcome's String of each package).
	KeyOutcome = attribute.Key("billkit.outcome")
	// KeyPlan is a plan's tier, from the plan catalog.
	KeyPlan = attribute.Key("billkit.plan")
	// KeyMeter is a quota meter's name, from the configuration.
	KeyMeter = attribute.Key("billkit.meter")
	// KeyOperation is the kind of a background store call of the quota
	// middleware ("settle" or "refund"), or the checkout endpoint
	// ("checkout" or "portal").
	KeyOperation = attribute.Key("billkit.operation")
	// KeySink is where usage was reported: "meter_events" or
	// "usage_records".
	KeySink = attribute.Key("billkit.sink")
	// KeyEntitlementStatus is an entitlement's status after a change
	// ("none" for the empty status).
	KeyEntitlementStatus = attribute.Key("billkit.entitlement.status")
	// KeyEntitlementPreviousStatus is an entitlement's status before a
	// change ("none" for the empty status).
	KeyEntitlementPreviousStatus = attribute.Key("billkit.entitlement.previous_status")
	// KeyEventType is a Stripe event's type, such as
	// "customer.subscription.updated".
	KeyEventType = attribute.Key("stripe.event.type")
	// KeyEventID is a Stripe event's ID. It is set on spans only, never on
	// a metric.
	KeyEventID = attribute.Key("stripe.event.id")
	// KeyAPIVersion is the Stripe API version of an event. It is set on
	// spans only.
	KeyAPIVersion = attribute.Key("stripe.api_version")
	// KeyRequestID is the ID Stripe gave a request (Request-Id). It is
	// set on spans only.
	KeyRequestID = attribute.Key("stripe.request_id")
)

// callBuckets are the bucket boundaries, in seconds, of calls of a
// millisecond to a few seconds: a quota decision (bounded by its
// deadline, 100ms by default), a webhook delivery, a Stripe request.
func callBuckets() []float64 {
	return []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
}

// runBuckets are the bucket boundaries, in seconds, of a reconciliation,
// which lists every subscription.
func runBuckets() []float64 {
	return []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
}

// Config configures [New]. Its zero value uses the global providers.
type Config struct {
	// MeterProvider creates the meter of every metric. The default value
	// (nil) is otel.GetMeterProvider() as of New; the global provider
	// forwards to the one installed later with otel.SetMeterProvider.
	MeterProvider metric.MeterProvider
	// TracerProvider creates the tracer of the webhook and Stripe spans.
	// The default value (nil) is otel.GetTracerProvider() as of New.
	TracerProvider trace.TracerProvider
}

// Instruments turns billkit's observations into OpenTelemetry metrics and
// spans: pass [Instruments.Quota], [Instruments.Webhook],
// [Instruments.Billing], [Instruments.Usage] and [Instruments.Checkout] as
// the Observer of each package's Config, and wrap the Stripe backend with
// [Instruments.WrapBackend]. One Instruments serves any number of
// components.
//
// An Instruments is safe for concurrent use. The zero value is not usable;
// create one with [New].
type Instruments struct {
	tracer   trace.Tracer
	quota    quotaInstruments
	webhook  webhookInstruments
	billing  billingInstruments
	usage    usageInstruments
	checkout checkoutInstruments
	stripe   stripeInstruments
}

// New creates the instruments described in the package documentation. It
// returns an error, wrapping those of the meter, when an instrument cannot
// be created.
func New(cfg Config) (*Instruments, error) {
	mp := cfg.MeterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	tp := cfg.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	m := mp.Meter(ScopeName, metric.WithInstrumentationVersion(Version), metric.WithSchemaURL(semconv.SchemaURL))
	ins := &Instruments{
		tracer: tp.Tracer(ScopeName, trace.WithInstrumentationVersion(Version), trace.WithSchemaURL(semconv.SchemaURL)),
	}
	err := errors.Join(
		ins.quota.init(m),
		ins.webhook.init(m, ins.tracer),
		ins.billing.init(m),
		ins.usage.init(m),
		ins.checkout.init(m),
		ins.stripe.init(m, ins.tracer),
	)
	if err != nil {
		return nil, fmt.Errorf("billkitotel: create instruments: %w", err)
	}
	return ins, nil
}

// instrumentSet collects the errors of creating several instruments.
type instrumentSet struct {
	m    metric.Meter
	errs []error
}

func (s *instrumentSet) counter(name, unit, desc string) metric.Int64Counter {
	c, err := s.m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
	s.errs = append(s.errs, err)
	return c
}

func (s *instrumentSet) histogram(name, desc string, buckets []float64) metric.Float64Histogram {
	h, err := s.m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc),
		metric.WithExplicitBucketBoundaries(buckets...))
	s.errs = append(s.errs, err)
	return h
}

func (s *instrumentSet) gauge(name, unit, desc string) metric.Int64Gauge {
	g, err := s.m.Int64Gauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
	s.errs = append(s.errs, err)
	return g
}

func (s *instrumentSet) err() error { return errors.Join(s.errs...) }

// appendIf appends kv to kvs when its string value is not empty: an empty
// plan or event type is left out rather than recorded as "".
func appendIf(kvs []attribute.KeyValue, k attribute.Key, v string) []attribute.KeyValue {
	if v == "" {
		return kvs
	}
	return append(kvs, k.String(v))
}
