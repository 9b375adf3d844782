// Package usage reports the units the quota middleware counted to Stripe,
// once and only once, for the subjects whose entitlements package billing
// keeps.
//
// A [Reporter] reads each subject's counted units (quota's Usage.Used, the
// settled units; denied units and units held by unsettled reservations are
// never billed) of every meter of the plan of its tier
// ([billing.Plan.AllMeters]: "requests" for a one-meter plan, or each of
// Plan.Meters, such as requests and tokens), and bills each meter through
// its own Stripe meter event name or metered price, in one of two protocols
// over one shared loop:
//
//   - Meter events, for meters with a MeterEventName (Billing Meters, the
//     default for new integrations): a meter event carrying the units
//     counted since the last acknowledged report, timestamped now (within
//     the period), under a deterministic identifier derived from the
//     subject, meter, period and unit range, which is also the
//     Idempotency-Key. The range and identifier are written down as "in
//     flight" before the call and resent unchanged, before anything new,
//     after a crash or a failure: a crash before the call loses nothing, a
//     crash after it bills nothing twice. Stripe's answer to a duplicate
//     identifier counts as delivered.
//   - Usage records, for meters with only a legacy MeteredPriceID (accounts
//     pinned before API version 2025-03-31.basil): a usage record with
//     action=set carrying the period's running total at the period's
//     start, to the subscription item of that price
//     (Entitlement.MeteredItems), so that a repeat overwrites instead of
//     adding. The price needs aggregate_usage "sum" (the default) or
//     "last_during_period".
//
// One catalog, and one plan, may mix both while accounts migrate; a meter
// with both bills meter events. A meter that bills overage only
// (OverageOnly) reports max(0, used − Included); what a period reported
// never decreases, even when a tier change raises Included. A previous
// period is billed with the meters of the tier it ended on
// (Entitlement.PreviousTier): a meter that tier had and the current one
// lacks still bills that period, and a meter only the current tier has
// does not.
//
// Each meter of each period has its own watermark, identifiers and
// in-flight record, so the guarantees below hold per meter: a crash
// between two meters' reports loses and repeats nothing of either. All the
// meters of a subject are reported under the subject's one lease.
//
// A watermark per subject, meter and period records what Stripe
// acknowledged; it is written only after Stripe's answer. One reporter at a
// time reports a subject, under a lease that expires if its holder dies;
// the holder stops calling Stripe at four fifths of the lease's TTL.
// Subjects come from the entitlement store's ForEach (no KEYS, no
// cross-slot script).
//
// [Reporter.Run] passes every Interval (default hourly) over each
// entitlement's Period and PreviousPeriod (and a late renewal's projected
// period, see [billing.Entitlement.CountingPeriod]); [Reporter.Register]
// flushes a customer's usage on invoice.created, before Stripe finalizes the
// invoice about an hour later. A closed period is reported until it has
// settled (Config.Settle after its end) and its watermark equals its
// counter; then it is final and its counter is not read again. Its counter
// expires after quota's retention (Config.CounterRetention, which
// [NewReporter] checks against MaxLateness and Settle), its watermark after
// Config.Retention.
//
// Redis keys (Config.Redis), with the default prefix:
//
//	billkit:{<subject>}:wm:<meter>:<period>   hash (r: units reported;
//	                          f, t, id, ts: the in-flight report; fin:
//	                          final); expires Retention (45 days) after
//	                          the period's end
//	billkit:{<subject>}:lease:report          string (holder's token);
//	                          expires after LeaseTTL (2 minutes)
//
// The watermarks need a Redis with persistence: a lost meter-event
// watermark makes the next report resend the period's units under new
// identifiers.
//
// Failures: a subject whose report fails is logged and backed off
// (BackoffMin doubling to BackoffMax) without holding up the others; Stripe
// calls are paced (Rate), each has a deadline (CallTimeout) and stripe-go's
// own network retries. When Stripe answers 429, every call pauses
// (RateLimitPause, doubling while 429s go on), the rate halves and regains
// a tenth per success, and the call is retried up to three times.
// [Reporter.Stats] reports the last pass's reported, failed, pending and
// unbillable subjects; an unbillable one (live, with counted units of a
// meter but no billing period, an unknown tier, or no customer or no
// subscription item of the meter's metered price) is also logged at ERROR,
// naming the meter, every pass.
//
// Observing: Config.Observer receives every call to Stripe that reports
// usage ([ReportObservation]: reported, rate_limited or failed, with the
// tier, meter, sink and units) and the [Stats] of every pass. The module
// github.com/billkit/billkit/otel turns them into OpenTelemetry
// instruments.
package usage
