package billkitotel

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/billkit/billkit/billing"
)

// billingInstruments are the billing lifecycle's instruments.
type billingInstruments struct {
	events     metric.Int64Counter
	changes    metric.Int64Counter
	runs       metric.Int64Counter
	duration   metric.Float64Histogram
	repaired   metric.Int64Counter
	unreadable metric.Int64Counter
}

func (b *billingInstruments) init(m metric.Meter) error {
	s := instrumentSet{m: m}
	b.events = s.counter("billkit.billing.events", "{event}",
		"Stripe events given to the billing lifecycle, by outcome and type.")
	b.changes = s.counter("billkit.billing.entitlement.changes", "{change}",
		"Entitlement changes, by plan and status after the change and status before it.")
	b.runs = s.counter("billkit.billing.reconcile.runs", "{run}",
		"Reconciliations with Stripe, by outcome (ok or failed).")
	b.duration = s.histogram("billkit.billing.reconcile.duration",
		"Duration of a reconciliation with Stripe.", runBuckets())
	b.repaired = s.counter("billkit.billing.reconcile.repaired", "{entitlement}",
		"Entitlements that had drifted from Stripe and that a reconciliation repaired.")
	b.unreadable = s.counter("billkit.billing.reconcile.unreadable", "{subscription}",
		"Subscriptions of billkit's that a reconciliation found without a configured price, period or status.")
	return s.err()
}

// Billing returns an observer for billing.Config.Observer. It records
// billkit.billing.events, billkit.billing.entitlement.changes and the
// reconciliation metrics (billkit.billing.reconcile.runs, .duration,
// .repaired and .unreadable), and adds a "billkit.billing.event" event
// (outcome and type) to the current span when it is recording, such as
// the webhook delivery's span of [Instruments.Webhook]. No subject,
// customer or event ID is recorded in a metric.
func (ins *Instruments) Billing() billing.Observer {
	b := &ins.billing
	return billing.Observer{Event: b.event, Changed: b.changed, Reconciled: b.reconciled}
}

func (b *billingInstruments) event(ctx context.Context, o billing.EventObservation) {
	kvs := appendIf([]attribute.KeyValue{KeyOutcome.String(o.Outcome.String())}, KeyEventType, o.EventType)
	b.events.Add(ctx, 1, metric.WithAttributes(kvs...))
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent("billkit.billing.event", trace.WithAttributes(kvs...))
	}
}

func (b *billingInstruments) changed(ctx context.Context, before, after billing.Entitlement) {
	kvs := appendIf([]attribute.KeyValue{
		KeyEntitlementStatus.String(statusName(after.Status)),
		KeyEntitlementPreviousStatus.String(statusName(before.Status)),
	}, KeyPlan, after.Tier)
	b.changes.Add(ctx, 1, metric.WithAttributes(kvs...))
}

// statusName is s, or "none" for the empty status.
func statusName(s billing.Status) string {
	if s == billing.StatusNone {
		return "none"
	}
	return string(s)
}

func (b *billingInstruments) reconciled(ctx context.Context, o billing.ReconcileObservation) {
	outcome := "ok"
	if o.Err != nil {
		outcome = "failed"
	}
	rep := o.Report
	opt := metric.WithAttributes(KeyOutcome.String(outcome))
	b.runs.Add(ctx, 1, opt)
	b.duration.Record(ctx, o.Duration.Seconds(), opt)
	// A failed run may have repaired some before failing: those count.
	if n := len(rep.Repaired); n > 0 {
		b.repaired.Add(ctx, int64(n))
	}
	if n := len(rep.Unreadable); n > 0 {
		b.unreadable.Add(ctx, int64(n))
	}
}
