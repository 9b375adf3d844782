package billkitotel

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/billkit/billkit/webhook"
)

// WebhookSpanName is the name of a delivery's span until its event is
// read; it then becomes WebhookSpanName + " " + the event's type, such as
// "stripe webhook invoice.paid".
const WebhookSpanName = "stripe webhook"

// webhookInstruments are the webhook handler's instruments.
type webhookInstruments struct {
	tracer     trace.Tracer
	deliveries metric.Int64Counter
	duration   metric.Float64Histogram
}

func (w *webhookInstruments) init(m metric.Meter, t trace.Tracer) error {
	s := instrumentSet{m: m}
	w.tracer = t
	w.deliveries = s.counter("billkit.webhook.deliveries", "{delivery}",
		"Webhook deliveries, by outcome, event type and response status.")
	w.duration = s.histogram("billkit.webhook.delivery.duration",
		"Time from a delivery's arrival to its outcome, handlers included.", callBuckets())
	return s.err()
}

// webhookSpanKey is the context key of the span Start began, so that Done
// ends that span and no other (such as an HTTP server span around the
// handler).
type webhookSpanKey struct{}

// Webhook returns an observer for webhook.Config.Observer. It records
// billkit.webhook.deliveries and billkit.webhook.delivery.duration, and
// traces each delivery with a span of kind internal: it nests under the
// HTTP server span of an instrumented server (such as otelhttp's), which
// is the one server span of the request, and the handlers' Stripe calls
// made through [Instruments.WrapBackend] nest under it.
//
// The span is named [WebhookSpanName], then renamed after the event's
// type; it carries the event's ID, type and API version, the outcome and
// the response status. A delivery that failed or was rejected
// (handler_failed, store_failed, bad_signature, stale, malformed,
// too_large, bad_method) records its error and ends with status Error.
// The event ID is on the span only, never on a metric.
func (ins *Instruments) Webhook() webhook.Observer {
	w := &ins.webhook
	return webhook.Observer{Start: w.start, Done: w.done}
}

func (w *webhookInstruments) start(ctx context.Context) context.Context {
	ctx, span := w.tracer.Start(ctx, WebhookSpanName, trace.WithSpanKind(trace.SpanKindInternal))
	return context.WithValue(ctx, webhookSpanKey{}, span)
}

func (w *webhookInstruments) done(ctx context.Context, d webhook.Delivery) {
	outcome := KeyOutcome.String(d.Outcome.String())
	status := semconv.HTTPResponseStatusCode(d.Status)
	hist := appendIf([]attribute.KeyValue{outcome}, KeyEventType, d.EventType)
	w.deliveries.Add(ctx, 1, metric.WithAttributes(append(hist, status)...))
	w.duration.Record(ctx, d.Duration.Seconds(), metric.WithAttributes(hist...))

	span, ok := ctx.Value(webhookSpanKey{}).(trace.Span)
	if !ok {
		return // Start was not this observer's
	}
	if d.EventType != "" {
		span.SetName(WebhookSpanName + " " + d.EventType)
	}
	kvs := appendIf(appendIf(appendIf([]attribute.KeyValue{outcome, status},
		KeyEventID, d.EventID), KeyEventType, d.EventType), KeyAPIVersion, d.APIVersion)
	span.SetAttributes(kvs...)
	if deliveryFailed(d.Outcome) {
		if d.Err != nil {
			span.RecordError(d.Err)
		}
		span.SetStatus(codes.Error, d.Outcome.String())
	}
	span.End()
}

// deliveryFailed reports whether a delivery with outcome o failed or was
// rejected. Handled, duplicate and ignored events are successes, and so is
// in_flight: another delivery of the event is handling it.
func deliveryFailed(o webhook.Outcome) bool {
	switch o {
	case webhook.Handled, webhook.Duplicate, webhook.Ignored, webhook.InFlightElsewhere:
		return false
	}
	return true
}
