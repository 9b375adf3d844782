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
//	http.ListenAndServe(addr, mw.Handle(api))
//
// Handlers behind the middleware read the decision (subject, plan, limit,
// used, remaining, period) with [FromContext].
//
// # Stores
//
// A [Store] decides and counts in one atomic step ([Store.Take]). A
// [TakeRequest] carries the hard limit: Limit is the cap, zero allows
// nothing, and Unlimited (with Limit 0) lifts the cap; the middleware
// sets them from [Limits.Limit] and [Limits.Unlimited]. The package
// quotatest checks that a Store of your own has the same semantics.
//
// # Periods
//
// Usage is counted per subject, meter and period. The period is the plan's
// explicit [Limits.Period] (such as the Stripe subscription's billing
// period) when it contains the request's time, else the calendar day or
// month in UTC ([Limits.Interval]). The period's [Period.ID] is part of
// the counter's key, so the count resets exactly at the period's end and a
// closed period's total stays readable with [Store.Usage] until the
// counter expires, [Config.Retention] (default 35 days) after the period's
// end.
//
// # Responses
//
//   - Allowed: the request reaches the handler with the RateLimit header
//     fields of draft-ietf-httpapi-ratelimit-headers, for plans with a cap:
//     RateLimit-Policy: "pro";q=1000;w=2592000 (quota, period length in
//     seconds) and RateLimit: "pro";r=250;t=86400 (remaining units,
//     seconds until the period resets). The policy is named after the plan
//     (or the meter when the plan has no name). Plans without a cap
//     (overage without a hard limit) get no RateLimit fields.
//   - Soft limit: a request at or above [Limits.Soft] is allowed and carries
//     Quota-Soft-Limit: <soft>; the one request whose count crosses the
//     threshold also fires [Config.OnSoftLimit].
//   - Over the hard limit: 402 Payment Required, application/problem+json of
//     type [ProblemQuotaExceeded] with "limit", "used" and "reset", and
//     Retry-After: seconds until the period ends. The request's cost goes to
//     the denied counter, which is never billed. [Config.Deny] replaces the
//     response; [Config.OnDeny] observes it.
//   - A plan that allows nothing (a zero [Limits.Limit] without
//     [Limits.Unlimited], such as the zero Limits): 402 as above, with
//     "limit": 0; the store is not asked (the decision needs no round trip
//     and holds while Redis is down) and nothing is counted.
//   - No active plan ([ErrNoPlan] from the limits source): 402 with the
//     distinct type [ProblemNoPlan]; nothing is counted. 402 rather than 403
//     because subscribing grants access; the type tells it from a used-up
//     quota.
//   - No subject: 401; nothing is counted.
//   - A cost function that fails or returns zero or less, or a subject the
//     store cannot key (see [ErrInvalidSubject]): 500; this is a server bug,
//     logged at error level; nothing is counted.
//
// # Failure behaviour
//
// One decision (limits source and store together) has [Config.Deadline],
// 100ms by default. When the store or the limits source fails or runs past
// it, the middleware is fail-closed by default: 503 Service Unavailable
// with Retry-After ([Config.RetryAfter], 1s by default). With
// [Config.FailOpen] the request reaches the handler uncounted, with a
// [Decision] whose Degraded field is set, and the failure is logged at warn
// level. Nothing is retried in the background and no goroutine is started,
// so the middleware recovers on the first request after Redis returns.
// (go-redis itself, once PoolSize dials have failed, stops dialing for
// requests and probes the server once a second until it answers, so its
// recovery may take up to a second more.)
//
// # Redis
//
// [RedisStore] needs Redis 7.0 or later (standalone, Sentinel or Cluster)
// and a go-redis client with ContextTimeoutEnabled, so that the deadline
// reaches the socket ([NewRedisStore] refuses a client without it with
// [ErrInvalidConfig]). Each counter is one hash:
//
//	key:     PREFIX:{SUBJECT}:usage:METER:PERIODID   (billkit:{alice}:usage:requests:20261101)
//	fields:  used    billable units of allowed requests
//	         denied  units of denied requests (not billable)
//	expiry:  EXPIREAT period end + retention, set on every write, only ever extended
//
// PREFIX is [RedisOptions.Prefix], [DefaultPrefix] by default. PERIODID is
// the period's UTC start, 20061102 at midnight or 20061102T150405Z
// otherwise. The subject is the Cluster hash tag, so it may not contain '{'
// or '}' (see [ErrInvalidSubject] for the whole rule, which every billkit
// package shares). A decision is one EVALSHA of a Lua script that
// checks the limit, counts and sets the expiry atomically: one round trip,
// in which the script runs HINCRBY and EXPIRETIME for an allowed request
// (plus EXPIREAT when the expiry must move). [RedisStore.Usage] is one
// HMGET.
package quota
