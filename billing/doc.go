// Package billing turns a Stripe subscription into what a subject (an
// account of your application) may use, and reports what it used back to
// Stripe. It plugs into billkit's other packages: its lifecycle handlers
// register on a [webhook.Handler], its [LimitsCache] ([Lifecycle.Limits])
// is the quota middleware's [quota.LimitsSource], and its [Plans] are the
// checkout package's [checkout.Catalog], so a plan's prices are declared
// once. Usage reporting lives in package
// [github.com/billkit/billkit/billing/usage].
//
// # Plans
//
// A [Plan] names a tier, its Stripe price, its meters and its features. A
// [Plans] catalog is built from code ([NewPlans]), the environment
// ([PlansFromEnv]: PRICE_<TIER> and PRICE_<TIER>_METERED read by checkout's
// own parser, plus PLAN_<TIER>_INCLUDED, _SOFT, _HARD, _OVERAGE,
// _METER_EVENT, _BILL, _INTERVAL, _FEATURES) or JSON ([PlansFromJSON]).
// Invalid configuration is an error wrapping [ErrInvalidConfig] that names
// the variable or field and never repeats its value.
//
// # Meters
//
// A meter is one quantity a plan sells, counted by the quota middleware
// under the meter's name: "requests" (quota.DefaultMeter), "tokens",
// "bytes". Each [Meter] has its own included units, soft and hard limits,
// overage policy and Stripe billing (a billing meter's event name, or a
// legacy metered price). A plan of one meter, "requests", writes it in the
// plan's own fields, as short as ever:
//
//	billing.Plan{Tier: "pro", PriceID: "price_pro", Included: 10000}
//
// A plan of several lists them all in Plan.Meters (its own meter fields
// then stay zero):
//
//	billing.Plan{Tier: "ai", PriceID: "price_ai", Meters: []billing.Meter{
//		{Name: "requests", Included: 1000},
//		{Name: "tokens", Included: 50000, Hard: 80000, Overage: true,
//			MeterEventName: "ai_tokens", OverageOnly: true},
//	}}
//
// In the environment the plan's own variables are the requests meter's and
// every other meter has the same under its name, its metered price in
// PLAN_<TIER>_<METER>_METERED_PRICE (checkout's parser owns PRICE_):
//
//	PRICE_AI=price_ai
//	PLAN_AI_INCLUDED=1000
//	PLAN_AI_TOKENS_INCLUDED=50000  PLAN_AI_TOKENS_HARD=80000
//	PLAN_AI_TOKENS_OVERAGE=true    PLAN_AI_TOKENS_METER_EVENT=ai_tokens
//	PLAN_AI_TOKENS_BILL=overage
//
// and in JSON a plan has a "meters" array (see [PlansFromJSON]). The
// limits cache answers each meter's limits ([LimitsCache.Limits]), so one
// quota middleware per meter, or one enforcing several, reads them from
// the same entitlement; the usage reporter bills every meter to its own
// Stripe meter or price. A meter the subject's plan lacks allows nothing.
// Checkout sells a plan with its licensed price and the first metered
// price of its meters (checkout.Tier has one): a plan whose other meters
// bill through prices of their own needs those prices added to the
// subscription another way (the Dashboard, a subscription update), else
// their meter events are recorded but never invoiced. The entitlement
// keeps the subscription item of every configured metered price
// (Entitlement.MeteredItems), to which usage records are reported.
//
// # Features
//
// A plan lists boolean features (Plan.Features; PLAN_<TIER>_FEATURES=sso,export;
// JSON "features"), for example a model, SSO or an export. Stripe
// Entitlements is the other source: the lifecycle handles
// entitlements.active_entitlement_summary.updated, keeps the customer's
// active features' lookup keys on the entitlement (Entitlement.StripeFeatures;
// the newest summary by event time wins, in any delivery order; a summary
// of a customer not linked yet is parked like any event), and a summary
// that lists only part of them (has_more), or any with Config.Refetch, is
// completed by listing the customer's active entitlements with
// Config.Stripe. [Lifecycle.HasFeature] is true when the plan the
// entitlement grants now lists the feature or Stripe does, answered from
// the limits cache; [Lifecycle.RequireFeature] gates a route on it: 403
// (problem+json naming the feature) for a plan without it, 402 when the
// subject has no plan at all, 401 without a subject, 503 when the
// entitlement cannot be read. A pending subject's provisional allowance
// has no plan features; Stripe's are trusted whatever the status. Use a
// feature's Stripe lookup key as its name in Plan.Features to combine both.
//
// # Entitlements
//
// An [Entitlement] is one subject's status, tier, Stripe customer and
// subscription, metered subscription items, billing periods and Stripe
// Entitlements features. An
// [EntitlementStore] keeps them with a customer → subject index:
// [RedisStore] (standalone, Sentinel or Cluster; an atomic compare-and-set
// per update) or [MemoryStore]. Redis keys, with the default prefix:
//
//	billkit:{<subject>}:ent   hash (data: entitlement JSON, rev: revision);
//	                          no expiry while live, Retention (90 days)
//	                          after the last write once canceled or
//	                          incomplete_expired
//	billkit:cust:{<cus_id>}   string: the subject; same expiry as above
//	billkit:park:{<cus_id>}   hash: event ID → parked facts (at most 100);
//	                          expires ParkFor + 7 days after the last park
//
// # Lifecycle
//
// [Lifecycle.Register] adds handlers for these events to a webhook handler:
//
//	checkout.session.completed     links customer and subject: pending
//	customer.subscription.created  applies the subscription: status, tier
//	customer.subscription.updated  (from the price), period, metered item
//	customer.subscription.paused
//	customer.subscription.resumed
//	customer.subscription.deleted  canceled: access revoked
//	invoice.paid                   incomplete, past_due, unpaid → active
//	invoice.payment_failed         active, trialing → past_due
//	entitlements.active_entitlement_summary.updated
//	                               the customer's active features
//
// The states, and what the quota middleware is given for each by [LimitsCache]:
//
//	none                no entitlement               no plan (402)
//	pending             checkout done, not yet paid  Provisional allowance (requests only)
//	active, trialing    paid or in trial             the tier's plan's meters, over the billing period
//	past_due            a payment failed             the grace policy's tier's meters until GraceUntil, then no plan
//	unpaid, incomplete, incomplete_expired,
//	paused, canceled                                 no plan
//
// A subject is found from the object's metadata billkit_subject (set by
// the checkout package, [metaSubject]), else from the customer index.
//
// # Stripe API versions
//
// Stripe renders an event's object in the webhook endpoint's API version,
// which for an account opened today is newer than stripe-go v76's
// 2023-10-16: from 2025-03-31.basil a subscription's period is on its items
// (items.data[].current_period_start/end), an invoice names its
// subscription under parent.subscription_details, and an invoice line its
// price under pricing.price_details. The lifecycle reads every field it
// uses from the object's raw JSON, in one place, in every version from
// 2023-10-16 to the newest; customers and subscriptions may be IDs or
// expanded objects. When a subscription's items carry different periods,
// the item of the plan's licensed price decides. [Lifecycle.Reconcile] and
// Config.Refetch read the JSON Stripe answered too.
//
// What the handlers do with an event:
//
//   - An object of another type than the event's, a checkout in payment
//     mode, a subscription or invoice of no configured plan (another
//     product on the account) is acknowledged and logged.
//   - An event about one of billkit's subscriptions (a configured price,
//     billkit's metadata, or the subscription an entitlement follows)
//     without a period, a configured plan's price, a status or a
//     subscription in any known place is refused: the handler returns an
//     [*EventError] wrapping [ErrUnreadable] (the webhook answers 500 and
//     Stripe delivers it again), logs it at ERROR with the event's id,
//     type and api_version, and calls Config.OnEventError.
//   - An event whose customer is linked to no subject yet is parked in the
//     [ParkingStore] (by default the entitlement store) and applied as soon
//     as the link appears: a checkout.session.completed, any later event
//     naming the subject, [Lifecycle.Link], or the sweep of [Lifecycle.Run]
//     and Reconcile. Facts merge in any order (see below), so the result
//     equals in-order delivery. An event still unlinked after
//     Config.ParkFor (7 days) is dropped, logged at ERROR and reported as
//     [ErrUnmapped].
//
// The grace policy ([GracePolicy]) decides what a past_due subject keeps:
// [KeepAccess] (the default, for 7 days, counted from
// the failed invoice's finalization), [DowngradeTo] a named tier for a
// time, or [Suspend] at once.
//
// # Ordering and duplicates
//
// Stripe delivers events at least once and in any order, and its event
// timestamps have one-second resolution. Each handler therefore does not
// "apply a transition"; it merges the fact its event carries (a
// subscription snapshot, an invoice outcome, a completed checkout) into the
// entitlement's the sources, keeping per kind the newer fact by the event's
// creation time. Ties within one second are broken deterministically: the
// snapshot with the later period end, then the status further along the
// lifecycle (incomplete < trialing < active < past_due < unpaid < paused <
// canceled), then the event ID; a payment beats a failure. An invoice
// outcome counts only if it is not older than the subscription snapshot,
// and facts superseded this way are dropped. The entitlement's status is
// then derived from the facts alone. Consequences:
//
//   - A duplicate changes nothing, and an event older than the last one
//     applied to that subscription changes nothing (it can at most fill in
//     the start of a grace period or the previous billing period).
//   - Every order of the same events ends in the same entitlement; the
//     tests check all of them on random permutations with duplicates.
//   - A subscription.created (incomplete) and an invoice.paid of the same
//     second end active, whichever arrives first.
//   - An ended subscription never replaces a live one of the same subject
//     (a late deletion of an old subscription does not revoke the new one).
//     One live subscription per subject is assumed.
//
// With Config.Refetch every subscription and invoice event re-reads the
// subscription from Stripe and applies that snapshot instead, so neither
// payloads nor order matter, at one API call per event.
//
// # Enforcement bound
//
// [LimitsCache] answers from an in-process cache, so the quota middleware's
// hot path stays one Redis round trip. A change written by any process (a
// revocation) is enforced by every process within Config.LimitsTTL
// (default 1 second) plus one store read; the process that handled the
// event enforces it at once, as the lifecycle invalidates its own cache.
//
// # Late renewals
//
// Stripe renews a subscription at the end of its period, but the renewal's
// event can arrive late (or be lost until [Lifecycle.Reconcile] runs).
// Meanwhile an active, trialing or past_due entitlement still holds the
// ended period, and [LimitsCache] gives quota the projected next period: it
// starts exactly at the old period's end, as Stripe's renewed period does,
// and ends one interval later (n calendar months on the subscription's
// billing anchor for monthly and yearly prices, else the old period's
// length). A quota counter's key holds only its period's start, so the
// units counted meanwhile are the renewed period's: the usage reporter reports
// the projection while it lasts (never marking it final) and reads the
// same counter once the renewal is applied. Only the first projected start
// is exact: a renewal late by more than a whole period is projected on,
// but units counted past the first projection may be missed; run
// Reconcile after a webhook outage.
//
// # Reconciliation
//
// [Lifecycle.Reconcile] lists every subscription from Stripe (status "all",
// auto-paginated), applies each as a snapshot exactly as an event would, and
// returns a [ReconcileReport] of what it repaired, the subscriptions it could not
// map or read, the live entitlements whose subscription Stripe did not
// list, and the parked events it applied or dropped. [Lifecycle.Run] runs
// it at once and every Config.ReconcileEvery (default hourly); run it too
// after a webhook outage.
//
// # Observing
//
// Config.Observer receives every event's [EventObservation] (its
// [EventOutcome]: applied, unchanged, ignored, parked, refused, unmapped or
// failed), every entitlement change and every reconciliation. The module
// github.com/billkit/billkit/otel turns them into OpenTelemetry
// instruments.
//
// # Usage reporting
//
// Package [github.com/billkit/billkit/billing/usage] reports the counted
// units of every meter to Stripe, once and only once, as meter events or
// usage records according to each meter of the subject's plan.
package billing
