// Package billkitotel turns billkit's observations into OpenTelemetry
// metrics and spans.
//
// Its import path is github.com/billkit/billkit/otel and its name is
// billkitotel, so that it does not collide with go.opentelemetry.io/otel
// (as go-redis's redisotel does). It is a module of its own: billkit's
// core module does not depend on OpenTelemetry, and only programs that
// import this package download it.
//
// Create the [Instruments] once, and pass its observers to each component:
//
//	ins, err := billkitotel.New(billkitotel.Config{}) // the global providers
//	mw, err := quota.New(quota.Config{..., Observer: ins.Quota()})
//	wh, err := webhook.New(webhook.Config{..., Observer: ins.Webhook()})
//	lc, err := billing.NewLifecycle(billing.Config{..., Observer: ins.Billing()})
//	rp, err := usage.NewReporter(usage.Config{..., Observer: ins.Usage()})
//	ch, err := checkout.NewHandler(checkout.HandlerConfig{..., Observer: ins.Checkout()})
//	api := client.New(key, &stripe.Backends{API: ins.WrapBackend(backend), ...})
//
// # Metrics
//
// Names follow OpenTelemetry's semantic-convention style; durations are in
// seconds, in histograms with explicit buckets from 0.5ms to 10s (100ms to
// 10min for reconciliations).
//
//	metric                               kind       unit            attributes
//	billkit.quota.decisions              counter    {decision}      billkit.outcome, billkit.plan, billkit.meter
//	billkit.quota.decision.duration      histogram  s               billkit.outcome
//	billkit.quota.soft_limit.crossings   counter    {crossing}      billkit.plan, billkit.meter
//	billkit.quota.background.calls       counter    {call}          billkit.operation, billkit.outcome
//	billkit.quota.background.duration    histogram  s               billkit.operation, billkit.outcome
//	billkit.webhook.deliveries           counter    {delivery}      billkit.outcome, stripe.event.type, http.response.status_code
//	billkit.webhook.delivery.duration    histogram  s               billkit.outcome, stripe.event.type
//	billkit.billing.events               counter    {event}         billkit.outcome, stripe.event.type
//	billkit.billing.entitlement.changes  counter    {change}        billkit.plan, billkit.entitlement.status, billkit.entitlement.previous_status
//	billkit.billing.reconcile.runs       counter    {run}           billkit.outcome
//	billkit.billing.reconcile.duration   histogram  s               billkit.outcome
//	billkit.billing.reconcile.repaired   counter    {entitlement}   -
//	billkit.billing.reconcile.unreadable counter    {subscription}  -
//	billkit.usage.reports                counter    {report}        billkit.outcome, billkit.plan, billkit.meter, billkit.sink
//	billkit.usage.reported_units         counter    {unit}          billkit.plan, billkit.meter, billkit.sink
//	billkit.usage.failed_units           counter    {unit}          billkit.plan, billkit.meter, billkit.sink
//	billkit.usage.report.duration        histogram  s               billkit.outcome, billkit.sink
//	billkit.usage.pending_subjects       gauge      {subject}       -
//	billkit.usage.unbillable_subjects    gauge      {subject}       -
//	billkit.checkout.requests            counter    {request}       billkit.operation, billkit.plan, http.response.status_code
//	billkit.checkout.request.duration    histogram  s               billkit.operation, billkit.plan, http.response.status_code
//	billkit.stripe.requests              counter    {request}       http.request.method, url.template, http.response.status_code, error.type
//	billkit.stripe.request.duration      histogram  s               http.request.method, url.template, http.response.status_code, error.type
//
// # Attributes
//
// Every attribute of a metric takes its values from a bounded set: the
// configuration (plans and meters), Stripe's event types, or a fixed list.
// No metric carries a subject, customer, event ID, error message or
// payload. An empty plan, meter or event type is left out.
//
//	attribute                           values
//	billkit.outcome                     the component's outcome: quota allowed, denied, no_plan, unavailable,
//	                                    fail_open, unauthenticated, failed; webhook handled, duplicate,
//	                                    ignored, in_flight, handler_failed, store_failed, bad_signature,
//	                                    stale, malformed, too_large, bad_method; billing applied, unchanged,
//	                                    ignored, parked, refused, unmapped, failed; usage reported,
//	                                    rate_limited, failed, already_reported; background calls and reconciliations ok, failed
//	billkit.plan                        a plan's tier (quota's Limits.Plan, billing's Tier)
//	billkit.meter                       a quota meter's name
//	billkit.operation                   settle, refund
//	billkit.sink                        meter_events, usage_records
//	billkit.entitlement.status          an entitlement status (none, pending, active, past_due, ...)
//	billkit.entitlement.previous_status the status before the change
//	stripe.event.type                   a Stripe event type, read from a verified payload
//	http.response.status_code           the HTTP status of the webhook's answer, or of Stripe's
//	http.request.method                 GET, POST, DELETE
//	url.template                        a Stripe route with IDs replaced, such as /v1/subscriptions/{id}
//	error.type                          a failed Stripe call: its status code, timeout, canceled or a Go type
//
// # Spans
//
// [Instruments.Webhook] traces each delivery ("stripe webhook", renamed
// "stripe webhook <event type>") and [Instruments.WrapBackend] each
// Stripe call ("stripe POST /v1/billing/meter_events"); a handler's Stripe
// calls nest under its delivery's span. Spans carry a Stripe event's or
// request's ID, never a subject as an attribute; a failed delivery's or
// call's span records its error, whose message says what the handler's
// or Stripe's error says (Stripe's may name a customer, a handler's
// anything). [Instruments.Quota] and
// [Instruments.Billing] add an event to the current span when it is
// recording.
package billkitotel
