// Package quota meters an HTTP API's requests against each customer's
// subscription plan and blocks them when the plan's quota is used up.
//
// # Wiring
//
// A [Middleware] needs three things: a [SubjectFunc] that names the
// authenticated caller, a [LimitsSource] that tells what the caller's plan
// allows (the billing package provides one; [StaticLimits] and [LimitsFunc]
// are simple ones), and a [Store] that counts ([RedisStore] in production,
// [MemoryStore] for tests and single instances):
//
//	rdb := redis.NewClient(&redis.Options{Addr: "localhost:6379", ContextTimeoutEnabled: true})
//	store, err := quota.NewRedisStore(rdb, quota.RedisOptions{})
//	if err != nil { ... }
//	mw, err := quota.New(quota.Config{
//		Subject: func(r *http.Request) (string, error) { return accountFromAuth(r) },
//		Limits:  plans, // a quota.LimitsSource
//		Store:   store,
//	})
//	if err != nil { ... }
//	defer mw.Close() // after the server has shut down: waits for settles and refunds
//	http.ListenAndServe(addr, mw.Handle(api))
//
// Handlers behind the middleware read the decision (subject, plan, limit,
// used, remaining, period) with [FromContext].
//
// # Meters
//
// A plan may have several meters, such as "requests" and "tokens"; each
// has its own limits ([LimitsSource] answers per subject and meter) and
// its own counter. A Middleware counts one meter per request,
// [Config.Meter] ("requests" by default), by a cost known before the
// handler runs ([Config.Cost], 1 by default), and may reserve any number
// of other meters whose amount the handler learns only afterwards
// ([Config.Reserve]). Every meter of a request is checked in one atomic
// store call: the request is allowed only if all of them fit, and refused
// with a 402 naming the first that does not. A meter that the subject's
// plan does not include (the zero [Limits]) allows nothing, so a route
// that reserves it answers 402 for that meter. Different routes may count
// different meters: wrap each with its own Middleware.
//
// # Reservations
//
// A [Reservation] is for usage known only after the response: the tokens
// of a completion, the bytes of an upload, the seconds of a job. Before
// the handler runs, the middleware reserves Reservation.Estimate's units
// of the meter in the same store call that counts the request meter:
//
//	mw, err := quota.New(quota.Config{
//		Subject: subjectOf, Limits: plans, Store: store,
//		Reserve: []quota.Reservation{{Meter: "tokens", Estimate: maxTokens}},
//	})
//
// A reservation fits when the meter's billable count, plus the units held
// by other unsettled reservations, plus the estimate stays at or below the
// meter's hard limit; reserved units are held, never billable. Concurrent
// requests can therefore never reserve past the limit, and when every
// handler settles within its estimate, the settled total never passes it.
//
// # Settling
//
// The handler reports what it actually used with [Settle], from its
// request's context:
//
//	n := generate(r)
//	quota.Settle(r.Context(), "tokens", n)
//
// After the handler returns, the middleware settles in the background: it
// releases the reservation and counts n, in one store call that the
// response never waits for (no round trip is added to the request's path;
// [Middleware.Close] waits for these calls). Settling less than the
// estimate releases the rest. Settling more counts the excess: it is never
// dropped, and it is the only way past a hard limit, by at most that
// excess (an estimate that is a true maximum keeps usage under the limit).
// A handler that returns (or panics) without settling settles its
// estimate. A process that dies between reserving and settling leaves its
// reservation held until [Config.ReservationTTL] (5 minutes by default)
// has passed; the next store call on that meter then releases it: it is
// never billed. A settle that comes after the TTL still counts what was
// used, but the units were no longer held, so the TTL must exceed the
// longest handler.
//
// # Refunds
//
// When a decision fails after the store may have counted it (the deadline
// passed while the reply was on its way, the request was canceled, the
// connection broke), the request is answered 503 (or let through
// uncounted with [Config.FailOpen]) and its take is refunded in the
// background: the take has a record that the store keeps for a short
// window ([RedisOptions.RefundWindow], one minute), and the refund gives
// back what that take counted and held, or, if the take has not run yet,
// marks the record so that it counts nothing when it does. On a store
// that is a [LostTakeResolver] a take without reservations has no ID:
// the default [RedisStore] on one server keeps its record in a field of
// a record shared by the decisions sent with it and undoes a lost take by
// itself, and a [MemoryStore] never loses one. Any other take carries an
// ID that names its record, and the middleware refunds it by that ID.
//
// # What a refused request costs
//
// Nothing billable. A 402 over a hard limit counts its units in the
// meters' denied counters, which are never billed; a 402 without a plan,
// a 401 and a 500 count nothing; a 503 is refunded (above); a request let
// through uncounted by fail-open is not counted either, and what its
// handler settles is dropped. Only allowed requests and settled units are
// billable ([Usage.Used]).
//
// # Stores
//
// A [Store] decides and counts in one atomic step ([Store.Take]), ends
// reservations ([Store.Settle]) and undoes undecided takes
// ([Store.Refund]). A [TakeRequest] carries the hard limit: Limit is the
// cap, zero allows nothing, and Unlimited (with Limit 0) lifts the cap;
// the middleware sets them from [Limits.Limit] and [Limits.Unlimited]. Its
// Reserve lists the [Hold]s of its reservations. The package quotatest
// checks that a Store of your own has the same semantics.
//
// # Periods
//
// Usage is counted per subject, meter and period. The period is the plan's
// explicit [Limits.Period] (such as the Stripe subscription's billing
// period) when it contains the request's time, else the calendar day or
// month in UTC ([Limits.Interval]); each meter of a request has its own. The
// period's [Period.ID] is part of the counter's key, so the count resets
// exactly at the period's end and a closed period's total stays readable
// with [Store.Usage] until the counter expires, [Config.Retention]
// (default 35 days) after the period's end.
//
// # Responses
//
//   - Allowed: the request reaches the handler with the RateLimit header
//     fields of draft-ietf-httpapi-ratelimit-headers, for meters with a cap:
//     RateLimit-Policy: "pro";q=1000;w=2592000 (quota, period length in
//     seconds) and RateLimit: "pro";r=250;t=86400 (remaining units,
//     seconds until the period resets). With one meter, the policy is
//     named after the plan (or the meter when the plan has no name). With
//     reservations, each capped meter is one list member named after the
//     meter, the request meter first, and its remaining units are what is
//     neither used nor held: RateLimit-Policy: "requests";q=1000;w=2592000,
//     "tokens";q=50000;w=86400 and RateLimit: "requests";r=250;t=86400,
//     "tokens";r=1200;t=3600. Meters without a cap (overage without a
//     hard limit) get no member.
//   - Soft limit: a request at or above [Limits.Soft] of the request meter
//     is allowed and carries Quota-Soft-Limit: <soft>; the one request
//     whose count crosses the threshold also fires [Config.OnSoftLimit].
//   - Over a hard limit: 402 Payment Required, application/problem+json of
//     type [ProblemQuotaExceeded] whose "meter" names the exhausted meter,
//     with its "limit", "used", "reserved" and "reset", and Retry-After:
//     seconds until that meter's period ends. Nothing becomes billable or
//     held; each meter's units go to its denied counter.
//     [Config.Deny] replaces the response; [Config.OnDeny] observes it;
//     [Decision.Exhausted] names the meter.
//   - A meter that allows nothing (a zero [Limits.Limit] without
//     [Limits.Unlimited], such as the zero Limits): 402 as above, with
//     "limit": 0; the store is not asked (the decision needs no round trip
//     and holds while Redis is down) and nothing is counted.
//   - No active plan ([ErrNoPlan] from the limits source): 402 with the
//     distinct type [ProblemNoPlan]; nothing is counted. 402 rather than 403
//     because subscribing grants access; the type tells it from a used-up
//     quota.
//   - No subject: 401; nothing is counted.
//   - A cost or estimate function that fails or returns zero or less, or a
//     subject the store cannot key (see [ErrInvalidSubject]): 500; this is
//     a server bug, logged at error level; nothing is counted.
//
// # Failure behaviour
//
// One decision (limits source and store together) has [Config.Deadline],
// 100ms by default. When the store or the limits source fails or runs past
// it, the middleware is fail-closed by default: 503 Service Unavailable
// with Retry-After ([Config.RetryAfter], 1s by default). With
// [Config.FailOpen] the request reaches the handler uncounted, with a
// [Decision] whose Degraded field is set, and the failure is logged at warn
// level. A store failure starts one refund in the background (see
// Refunds), bounded by its own deadline of ten times Config.Deadline;
// nothing is retried, and the middleware keeps no failure state, so it
// recovers on the first request after Redis returns. (go-redis itself,
// once PoolSize dials have failed, stops dialing for requests and probes
// the server once a second until it answers, so its recovery may take up
// to a second more.) A settle or refund that fails is logged at error
// level: a failed settle leaves its reservation to expire unbilled.
//
// # Observing
//
// [Config.Observer] receives every request's [Observation] (its [Outcome]:
// allowed, denied, no_plan, unavailable, fail_open, unauthenticated or
// failed, with the plan, the deciding meter, a soft-limit crossing and the
// decision's duration) and every settle's and refund's
// [BackgroundObservation]. Observations carry no subject, so their fields
// can label metrics; the module github.com/billkit/billkit/otel turns them
// into OpenTelemetry instruments. An unset Observer reads no clock and
// allocates nothing; a set one adds no allocation either.
//
// # Redis
//
// [RedisStore] needs Redis 7.0 or later (standalone, Sentinel or Cluster)
// and a go-redis client with ContextTimeoutEnabled, so that the deadline
// reaches the socket ([NewRedisStore] refuses a client without it with
// [ErrInvalidConfig]). Its keys:
//
//	PREFIX:{SUBJECT}:usage:METER:PERIODID   hash: the counter (billkit:{alice}:usage:requests:20261101)
//	    used      billable units: allowed requests, settled reservations
//	    denied    units of denied requests (not billable)
//	    reserved  units held by unsettled reservations (not billable)
//	    expiry:   EXPIREAT period end + retention, set on every write, only ever extended
//	PREFIX:{SUBJECT}:holds:METER:PERIODID   sorted set: the counter's unsettled reservations
//	    member "TAKEID:UNITS", score: when it expires (Unix ms, by RedisOptions.Now)
//	    expiry:   the counter's
//	PREFIX:{SUBJECT}:take:TAKEID            string: a take's outcome, for refunds (takes with an ID)
//	    "a" allowed, "d" denied, "r" refunded (a tombstone)
//	    expiry:   PX RefundWindow (one minute by default)
//	PREFIX:batch:RANDOM:SEQ                 the record shared by takes without ID sent together (one server)
//	    hash, field: the take's number in the send, value "a" allowed,
//	    "d" denied, "x" counted nothing, "r" resolved by the store
//	    expiry:   PX RefundWindow (one minute by default)
//	PREFIX:{SUBJECT}:batch:RANDOM:SEQ       the record of a take without ID sent alone (a string
//	    holding that value), or of one subject's takes of a send on a server
//	    that refuses keys across hash slots (a hash, as above)
//	    expiry:   PX RefundWindow (one minute by default)
//
// PREFIX is [RedisOptions.Prefix], [DefaultPrefix] by default. PERIODID is
// the period's UTC start, 20061102 at midnight or 20061102T150405Z
// otherwise. The subject is the Cluster hash tag, so every key of one
// subject lives in one slot, and it may not contain '{' or '}' (see
// [ErrInvalidSubject] for the whole rule, which every billkit package
// shares). A decision is one EVALSHA of a Lua script that checks every
// meter, counts, holds, records the take and sets the expiries
// atomically: one round trip (shared by the decisions in flight at the
// same time, which go as one pipeline: see [RedisStore] and
// [RedisOptions.NoCoalesce]), in which the script runs SET (its record),
// HMGET, HINCRBY and EXPIRETIME for an allowed request of one meter (plus
// EXPIREAT when the expiry must move; a take sent with others on one
// server writes HSETNX, a field of their shared record, instead of SET,
// and the first of them PEXPIRE; those of one counter run as one script
// call), and for each reserved meter HMGET,
// HINCRBY, ZADD and EXPIRETIME, plus ZRANGEBYSCORE when the meter holds
// reservations, to release the expired ones. A settle and a refund are
// one EVALSHA each, sent after the response; [RedisStore.Usage] is one
// read-only script (HMGET, and ZRANGEBYSCORE when units are held).
package quota
