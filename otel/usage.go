package billkitotel

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/billkit/billkit/billing/usage"
)

// usageInstruments are the usage reporter's instruments.
type usageInstruments struct {
	reports    metric.Int64Counter
	units      metric.Int64Counter
	failed     metric.Int64Counter
	duration   metric.Float64Histogram
	pending    metric.Int64Gauge
	unbillable metric.Int64Gauge
}

func (u *usageInstruments) init(m metric.Meter) error {
	s := instrumentSet{m: m}
	u.reports = s.counter("billkit.usage.reports", "{report}",
		"Usage reports sent to Stripe (meter events or usage records), by outcome, plan, meter and sink.")
	u.units = s.counter("billkit.usage.reported_units", "{unit}",
		"Units of usage that Stripe acknowledged, by plan, meter and sink; a resend Stripe already held counts once.")
	u.failed = s.counter("billkit.usage.failed_units", "{unit}",
		"Units carried by usage reports that failed (each attempt; they stay pending and are sent again), by plan, meter and sink.")
	u.duration = s.histogram("billkit.usage.report.duration",
		"Duration of a usage report to Stripe.", callBuckets())
	u.pending = s.gauge("billkit.usage.pending_subjects", "{subject}",
		"Subjects that the last reporter pass left with usage not yet reported.")
	u.unbillable = s.gauge("billkit.usage.unbillable_subjects", "{subject}",
		"Subjects of the last reporter pass whose counted usage the reporter cannot bill.")
	return s.err()
}

// Usage returns an observer for usage.Config.Observer. It records
// billkit.usage.reports, billkit.usage.reported_units (units Stripe
// acknowledged, once: an already_reported resend adds none),
// billkit.usage.failed_units (units of failed attempts),
// billkit.usage.report.duration, and, after each pass,
// the gauges billkit.usage.pending_subjects and
// billkit.usage.unbillable_subjects. Several reporters over the same
// subjects report the same gauges: read them as the last value.
func (ins *Instruments) Usage() usage.Observer {
	u := &ins.usage
	return usage.Observer{Report: u.report, Pass: u.pass}
}

func (u *usageInstruments) report(ctx context.Context, o usage.ReportObservation) {
	kvs := appendIf(appendIf(appendIf(make([]attribute.KeyValue, 0, 4), KeyPlan, o.Plan), KeyMeter, o.Meter), KeySink, o.Sink)
	where := attribute.NewSet(kvs...)
	outcome := KeyOutcome.String(o.Outcome.String())
	u.reports.Add(ctx, 1, metric.WithAttributes(append(kvs, outcome)...))
	if o.Units > 0 {
		switch o.Outcome {
		case usage.Reported:
			u.units.Add(ctx, o.Units, metric.WithAttributeSet(where))
		case usage.ReportFailed:
			u.failed.Add(ctx, o.Units, metric.WithAttributeSet(where))
		}
	}
	u.duration.Record(ctx, o.Duration.Seconds(), metric.WithAttributes(appendIf([]attribute.KeyValue{outcome}, KeySink, o.Sink)...))
}

func (u *usageInstruments) pass(ctx context.Context, s usage.Stats) {
	u.pending.Record(ctx, int64(s.Pending))
	u.unbillable.Record(ctx, int64(s.Unbillable))
}
