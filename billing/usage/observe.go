package usage

import (
	"context"
	"time"
)

// Observer receives the reporter's outcomes, for metrics and traces (the
// module github.com/billkit/billkit/otel turns them into OpenTelemetry
// instruments). Each func is optional: a nil func is not called. They run
// synchronously on the reporter's goroutines, so they must be quick, and
// they must be safe for concurrent use.
//
// Use an observation's Outcome, Plan, Meter and Sink as metric labels,
// never its subject (which observations do not carry).
type Observer struct {
	// Report is called after every attempt to send a report (a meter
	// event or a usage record), including each one answered 429 and one
	// the reporter refuses before calling Stripe (a subject without the
	// customer or subscription item its billing needs).
	Report func(ctx context.Context, o ReportObservation)
	// Pass is called after every pass of [Reporter.ReportAll] that went
	// over every entitlement (not after one whose listing failed) with
	// the reporter's [Stats] (as [Reporter.Stats] returns them then), whose
	// Pending and Unbillable say how many subjects still have usage
	// waiting and how many have usage the reporter cannot bill.
	Pass func(ctx context.Context, s Stats)
}

// ReportOutcome is the outcome of one report to Stripe.
type ReportOutcome uint8

// Outcomes of [ReportObservation].
const (
	// Reported: Stripe acknowledged the report.
	Reported ReportOutcome = iota + 1
	// RateLimited: Stripe answered 429; the reporter slows down and sends
	// the same report again at once.
	RateLimited
	// ReportFailed: the call failed, or was answered 429 for the third
	// time in a row; the units stay pending and are sent again, under the
	// same identifier, by a later pass.
	ReportFailed
	// AlreadyReported: Stripe already held the report, from an earlier
	// attempt whose acknowledgement was not recorded (a crash, a lost
	// reply, a failed watermark write): a duplicate meter event
	// identifier or an idempotent replay. Nothing was billed again, and
	// its units were observed as Reported the first time.
	AlreadyReported
)

var reportOutcomeNames = [...]string{
	Reported:        "reported",
	RateLimited:     "rate_limited",
	ReportFailed:    "failed",
	AlreadyReported: "already_reported",
}

// String returns the outcome's name in snake case, such as "reported",
// fit for a metric label.
func (o ReportOutcome) String() string {
	if int(o) < len(reportOutcomeNames) && reportOutcomeNames[o] != "" {
		return reportOutcomeNames[o]
	}
	return "unknown"
}

// Sinks of [ReportObservation].
const (
	SinkMeterEvents  = "meter_events"
	SinkUsageRecords = "usage_records"
)

// ReportObservation is the outcome of one call to Stripe that reports
// usage.
type ReportObservation struct {
	// Outcome is what Stripe answered.
	Outcome ReportOutcome
	// Plan is the tier of the subject whose usage was reported.
	Plan string
	// Meter is the quota meter reported.
	Meter string
	// Sink is SinkMeterEvents or SinkUsageRecords.
	Sink string
	// Units is the number of units the report carries beyond what the
	// reporter had recorded as acknowledged: the meter event's value, or
	// the usage record's increase of the period's total. Count them as
	// billed only when Outcome is Reported (an AlreadyReported report's
	// units were Reported before).
	Units int64
	// Duration is how long the call took.
	Duration time.Duration
	// Err is the call's error; nil when Reported.
	Err error
}
