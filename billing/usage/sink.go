package usage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/billkit/billkit/quota"
	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
)

// reportMode says what the reports a [sink] receives carry, and so how
// the [Reporter] makes them idempotent.
type reportMode int

const (
	// reportTotals sends the period's running total, which Stripe stores
	// at one fixed timestamp and overwrites on every report (usage records
	// with action=set). Sending the same total twice changes nothing.
	reportTotals reportMode = iota + 1
	// reportDeltas sends the units counted since the last acknowledged
	// report, under a deterministic identifier that Stripe deduplicates
	// (Billing Meter events). The range of every delta is written down
	// before it is sent, so a resend after a crash carries exactly the
	// same range and identifier.
	reportDeltas
)

// mode returns how the meter is reported: deltas (meter events) when it
// names a Billing Meter event, totals (usage records) otherwise.
func (m meterSpec) mode() reportMode {
	if m.EventName != "" {
		return reportDeltas
	}
	return reportTotals
}

// sink names what a mode reports, for observations.
func (m reportMode) sink() string {
	if m == reportTotals {
		return SinkUsageRecords
	}
	return SinkMeterEvents
}

// billing names what a mode reports, for messages.
func (m reportMode) billing() string {
	if m == reportTotals {
		return "usage records"
	}
	return "meter events"
}

// String returns "totals" or "deltas".
func (m reportMode) String() string {
	switch m {
	case reportTotals:
		return "totals"
	case reportDeltas:
		return "deltas"
	default:
		return "reportMode(" + strconv.Itoa(int(m)) + ")"
	}
}

// meterSpec names one metered quantity of a plan: the quota counter that
// counts it and, for Billing Meters, the Stripe meter's event name.
type meterSpec struct {
	// Name is the quota meter whose counters are reported (the {meter}
	// part of billkit:{subject}:usage:{meter}:{period}). Required.
	Name string
	// EventName is the event_name of the Stripe Billing Meter that bills
	// this quantity. When it is set, the meter is reported as meter events
	// (Config.MeterEvents); when it is empty, as usage records to
	// the entitlement's metered subscription item
	// (Config.UsageRecords).
	EventName string
	// PriceID is the legacy metered price that bills this quantity when
	// EventName is empty, for logs.
	PriceID string
	// ItemID is the subscription item of PriceID that usage records are
	// reported to (when EventName is empty); "" when the subject's
	// subscription has none.
	ItemID string
	// Included is the number of units of each period that are not
	// reported: the period's reported quantity is max(0, counted −
	// Included). The zero value reports every counted unit. [planMeters]
	// sets it to billing.Plan.Included for plans that bill overage only
	// (Plan.OverageOnly).
	Included int64
}

// usageReport is one report of one subject's usage of one meter in one
// period. The [Reporter] builds it; a [sink] sends it.
type usageReport struct {
	// Subject is the billkit subject the usage belongs to.
	Subject string
	// Tier is the subject's plan, for observations.
	Tier string
	// CustomerID is the subject's Stripe customer.
	CustomerID string
	// SubscriptionItemID is the subscription item of the meter's metered
	// price (legacy usage records).
	SubscriptionItemID string
	// Meter is the meter reported.
	Meter meterSpec
	// Period is the billing period the units were counted in.
	Period quota.Period
	// From and To delimit the units reported, counted in reported units
	// (the counter less Meter.Included, see [meterSpec]): [From, To).
	// With [reportTotals], To is the period's total; with [reportDeltas],
	// To-From units are new.
	From, To int64
	// Identifier is deterministic for the report's content: the meter
	// event identifier and the Idempotency-Key of the request.
	Identifier string
	// Timestamp is the time the usage is reported at; it lies within
	// Period and is the same on every resend of the report.
	Timestamp time.Time
}

// sink delivers usage reports to Stripe. Implementations must be safe
// for concurrent use.
//
// Report returns nil only when Stripe acknowledged the report, including
// when Stripe answered that it already holds it (a duplicate identifier).
// Any other answer, and any network failure, is an error: the report is
// then retried with the same content.
type sink interface {
	// Mode says whether reports carry totals or deltas.
	Mode() reportMode
	// Report sends r to Stripe, within ctx's deadline.
	Report(ctx context.Context, r usageReport) error
}

// Compile-time interface checks.
var (
	_ sink = (*usageRecordSink)(nil)
	_ sink = (*meterEventSink)(nil)
)

// usageRecordSink reports usage as legacy usage records on the metered
// subscription item (stripe-go's UsageRecords.New), with action=set: each
// report sets the period's running total at the period's start, so a
// repeated or reordered resend of a total overwrites instead of adding.
//
// The price must be a legacy metered price with aggregate_usage "sum"
// (the default) or "last_during_period": a period then holds exactly one
// record and bills its quantity. Stripe accepts a timestamp only within
// the subscription's current period, and for the period that just ended
// until its invoice is finalized, which is why the [Reporter] flushes on
// invoice.created.
//
// A usageRecordSink is safe for concurrent use. Its zero value is not
// usable; create one with [newUsageRecordSink].
type usageRecordSink struct {
	api *client.API
}

// newUsageRecordSink returns a sink that reports through api, a client the
// caller built (its backend carries MaxNetworkRetries).
func newUsageRecordSink(api *client.API) *usageRecordSink {
	return &usageRecordSink{api: api}
}

// Mode returns [reportTotals].
func (s *usageRecordSink) Mode() reportMode { return reportTotals }

// Report sets the subscription item's usage at r.Timestamp to r.To.
func (s *usageRecordSink) Report(ctx context.Context, r usageReport) error {
	if r.SubscriptionItemID == "" {
		return fmt.Errorf("%w: subject has no metered subscription item", errReportInvalid)
	}
	p := &stripe.UsageRecordParams{
		SubscriptionItem: stripe.String(r.SubscriptionItemID),
		Action:           stripe.String(stripe.UsageRecordActionSet),
		Quantity:         stripe.Int64(r.To),
		Timestamp:        stripe.Int64(r.Timestamp.Unix()),
	}
	p.Context = ctx
	if r.Identifier != "" {
		p.SetIdempotencyKey(r.Identifier)
	}
	rec, err := s.api.UsageRecords.New(p)
	if err != nil {
		return fmt.Errorf("billing: usage record: %w", err)
	}
	if replayed(rec.LastResponse) {
		return errAlreadyReported
	}
	return nil
}

// errAlreadyReported is a sink's answer for a report that Stripe already
// held from an earlier attempt (a duplicate meter event identifier, or an
// idempotent replay): the report is delivered, and its units were counted
// as reported before.
var errAlreadyReported = errors.New("billing: report already delivered")

// replayed reports whether Stripe answered with the stored response of an
// earlier request of the same Idempotency-Key.
func replayed(r *stripe.APIResponse) bool {
	return r != nil && r.Header.Get("Idempotent-Replayed") == "true"
}

// meterEventConfig configures a [meterEventSink]. The zero value uses
// Stripe's default payload keys.
type meterEventConfig struct {
	// CustomerKey is the payload key that maps the event to the customer:
	// the meter's customer_mapping.event_payload_key. The default value is
	// "stripe_customer_id".
	CustomerKey string
	// ValueKey is the payload key that carries the quantity: the meter's
	// value_settings.event_payload_key. The default value is "value".
	ValueKey string
}

func (c meterEventConfig) withDefaults() meterEventConfig {
	if c.CustomerKey == "" {
		c.CustomerKey = "stripe_customer_id"
	}
	if c.ValueKey == "" {
		c.ValueKey = "value"
	}
	return c
}

// meterEventSink reports usage as Billing Meter events
// (stripe-go's BillingMeterEvents.New): each report is the delta since the
// last acknowledged one, with a deterministic identifier that is also the
// request's Idempotency-Key. A resend of the same report is answered by
// Stripe either with the original response (same idempotency key) or with
// a refusal of the duplicate identifier (HTTP 400, invalid_request_error,
// "An event already exists with identifier ..."); both mean Stripe holds
// the event, and Report returns nil for both.
//
// Stripe deduplicates identifiers within a rolling window of at least 24
// hours, and accepts events timestamped up to 35 days back.
//
// A meterEventSink is safe for concurrent use. Its zero value is not
// usable; create one with [newMeterEventSink].
type meterEventSink struct {
	api *client.API
	cfg meterEventConfig
}

// newMeterEventSink returns a sink that reports through api, a client the
// caller built (its backend carries MaxNetworkRetries).
func newMeterEventSink(api *client.API, cfg meterEventConfig) *meterEventSink {
	return &meterEventSink{api: api, cfg: cfg.withDefaults()}
}

// Mode returns [reportDeltas].
func (s *meterEventSink) Mode() reportMode { return reportDeltas }

// Report sends one meter event of r.To-r.From units under r.Identifier.
func (s *meterEventSink) Report(ctx context.Context, r usageReport) error {
	switch {
	case r.Meter.EventName == "":
		return fmt.Errorf("%w: meter %q has no Stripe event name", errReportInvalid, r.Meter.Name)
	case r.CustomerID == "":
		return fmt.Errorf("%w: subject has no Stripe customer", errReportInvalid)
	case r.Identifier == "":
		return fmt.Errorf("%w: meter event without identifier", errReportInvalid)
	case r.To <= r.From:
		return fmt.Errorf("%w: empty range", errReportInvalid)
	}
	p := &stripe.BillingMeterEventParams{
		EventName:  stripe.String(r.Meter.EventName),
		Identifier: stripe.String(r.Identifier),
		Payload: map[string]string{
			s.cfg.CustomerKey: r.CustomerID,
			s.cfg.ValueKey:    strconv.FormatInt(r.To-r.From, 10),
		},
		Timestamp: stripe.Int64(r.Timestamp.Unix()),
	}
	p.Context = ctx
	p.SetIdempotencyKey(r.Identifier)
	ev, err := s.api.BillingMeterEvents.New(p)
	if err != nil {
		if isDuplicateMeterEvent(err) {
			return errAlreadyReported
		}
		return fmt.Errorf("billing: meter event: %w", err)
	}
	if replayed(ev.LastResponse) {
		return errAlreadyReported
	}
	return nil
}

// duplicateIdentifierMessage starts the message of Stripe's refusal of a
// meter event whose identifier it already holds.
const duplicateIdentifierMessage = "An event already exists with identifier"

// isDuplicateMeterEvent reports whether err is Stripe's answer to a meter
// event whose identifier it already holds: HTTP 400, type
// invalid_request_error, with the message "An event already exists with
// identifier <id>." (or the code resource_already_exists). Such an event
// was delivered by an earlier attempt.
func isDuplicateMeterEvent(err error) bool {
	var se *stripe.Error
	if !errors.As(err, &se) {
		return false
	}
	if se.HTTPStatusCode != 400 || se.Type != stripe.ErrorTypeInvalidRequest {
		return false
	}
	return se.Code == stripe.ErrorCodeResourceAlreadyExists ||
		strings.HasPrefix(se.Msg, duplicateIdentifierMessage)
}

// reportIdentifier derives the deterministic identifier of a report: the
// same inputs always give the same identifier, different ranges of one
// period never share one. It is at most len(prefix)+41 characters, within
// Stripe's limits of 100 (identifier) and 255 (Idempotency-Key).
func reportIdentifier(prefix string, mode reportMode, subject, meter string, p quota.Period, item string, from, to int64) string {
	h := sha256.New()
	for _, s := range []string{mode.String(), subject, meter, p.ID(), p.End.UTC().Format(time.RFC3339), item,
		strconv.FormatInt(from, 10), strconv.FormatInt(to, 10)} {
		h.Write([]byte(strconv.Itoa(len(s))))
		h.Write([]byte{':'})
		h.Write([]byte(s))
	}
	return prefix + "_" + hex.EncodeToString(h.Sum(nil))[:40]
}
