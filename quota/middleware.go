package quota

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// SubjectFunc returns the subject that a request is metered against: the
// caller's account as established by authentication, never a value the
// client chooses freely. The subject is part of Redis keys and of log
// records, so it must not be a secret: return the account ID (or the ID of
// the API key), never the API key itself. An error or an empty subject
// means the request is not authenticated; the middleware answers 401. It
// must be safe for concurrent use.
type SubjectFunc func(*http.Request) (string, error)

// CostFunc returns the number of units a request uses. A result of zero or
// less, or an error, is a bug in the server (not in the request): the
// middleware answers 500 and counts nothing. A nil CostFunc in [Config]
// counts 1 per request. It must be safe for concurrent use.
type CostFunc func(*http.Request) (int64, error)

// HookFunc is called with a decision. It runs synchronously on the request's
// goroutine, before the response is written, so it must be quick; ctx is the
// request's context. It must be safe for concurrent use. A nil HookFunc in
// [Config] is not called.
type HookFunc func(ctx context.Context, d Decision)

// DenyFunc writes the response to a request that is over its hard limit.
// r carries d (see [FromContext]). It must be safe for concurrent use. A
// nil DenyFunc in [Config] means [DefaultDeny].
type DenyFunc func(w http.ResponseWriter, r *http.Request, d Decision)

// Defaults of [Config].
const (
	// DefaultMeter is the meter name when [Config.Meter] is empty.
	DefaultMeter = "requests"
	// DefaultDeadline bounds one decision when [Config.Deadline] is zero.
	DefaultDeadline = 100 * time.Millisecond
	// DefaultRetention is how long a counter outlives its period when
	// [Config.Retention] is zero: longer than a monthly invoice's draft
	// window, so a closed period can still be reported.
	DefaultRetention = 35 * 24 * time.Hour
	// DefaultRetryAfter is the Retry-After of a 503 when
	// [Config.RetryAfter] is zero.
	DefaultRetryAfter = time.Second
)

// Config configures a [Middleware]. Subject, Limits and Store are required;
// every other zero field means its documented default.
type Config struct {
	// Subject identifies the caller. Required.
	Subject SubjectFunc
	// Limits tells what the subject's plan allows. It is called on every
	// request inside the decision deadline, so it must answer from memory
	// (see [LimitsSource]). Required.
	Limits LimitsSource
	// Store keeps the counters, such as a [RedisStore]. Required.
	Store Store
	// Meter names what is counted; it is part of the counter's key. The
	// default is "requests". It must satisfy the rules of
	// [ErrInvalidMeter].
	Meter string
	// Cost returns a request's units. The default counts 1 per request.
	Cost CostFunc
	// FailOpen lets requests through, uncounted, when no decision could be
	// made in time (store or limits source failed or exceeded Deadline);
	// the failure is logged. The default (false) is fail-closed: such
	// requests get 503 with Retry-After.
	FailOpen bool
	// Deadline bounds one decision: the limits source and the store call
	// together. The default is 100ms. A request whose context ends sooner
	// is decided within its own deadline. A store must honour its context
	// (see [NewRedisStore]).
	Deadline time.Duration
	// Retention is how long a counter outlives its period, so that the
	// billing usage reporter can still read and report a closed period:
	// counters expire at period end + Retention. The default is 35 days.
	// It must exceed the billing reporter's MaxLateness plus Settle (34
	// days and 5 minutes by default), or a closed period's late report
	// reads an expired counter.
	Retention time.Duration
	// RetryAfter is the Retry-After of a 503 when the store is unavailable.
	// It is rounded up to whole seconds. The default is one second.
	RetryAfter time.Duration
	// OnSoftLimit is called once per crossing of a soft limit: for the one
	// request whose count reaches [Limits.Soft]. Optional.
	OnSoftLimit HookFunc
	// OnDeny is called for every request denied over its hard limit, before
	// Deny writes the response. Optional.
	OnDeny HookFunc
	// Deny writes the response to a denied request. The default is
	// [DefaultDeny]: 402 with an application/problem+json body.
	Deny DenyFunc
	// Logger receives failures to decide (warn) and server bugs (error: a
	// failing cost function, a subject the store cannot key). The default
	// (nil) is slog.Default().
	Logger *slog.Logger
	// Now is the clock that picks the period. The default is time.Now.
	Now func() time.Time
}

// withDefaults returns c with every zero field set to its default, or an
// error for a configuration that cannot work.
func (c *Config) withDefaults() (Config, error) {
	out := *c
	switch {
	case out.Subject == nil:
		return out, fmt.Errorf("%w: Subject is required", ErrInvalidConfig)
	case out.Limits == nil:
		return out, fmt.Errorf("%w: Limits is required", ErrInvalidConfig)
	case out.Store == nil:
		return out, fmt.Errorf("%w: Store is required", ErrInvalidConfig)
	case out.Deadline < 0:
		return out, fmt.Errorf("%w: Deadline is negative", ErrInvalidConfig)
	case out.Retention < 0:
		return out, fmt.Errorf("%w: Retention is negative", ErrInvalidConfig)
	case out.RetryAfter < 0:
		return out, fmt.Errorf("%w: RetryAfter is negative", ErrInvalidConfig)
	}
	if out.Meter == "" {
		out.Meter = DefaultMeter
	}
	if err := validMeter(out.Meter); err != nil {
		return out, fmt.Errorf("%w: Meter %q: %w", ErrInvalidConfig, out.Meter, err)
	}
	if out.Deadline == 0 {
		out.Deadline = DefaultDeadline
	}
	if out.Retention == 0 {
		out.Retention = DefaultRetention
	}
	if out.RetryAfter == 0 {
		out.RetryAfter = DefaultRetryAfter
	}
	if out.Deny == nil {
		out.Deny = DefaultDeny
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	if out.Now == nil {
		out.Now = time.Now
	}
	return out, nil
}

// Middleware meters requests against their subject's plan. Build it with
// [New] and wrap handlers with [Middleware.Handle].
//
// A Middleware is safe for concurrent use. The zero value is not usable.
type Middleware struct {
	cfg        Config
	retryAfter string // precomputed Retry-After of a 503

	mu       sync.RWMutex
	policies map[policyKey]string // RateLimit-Policy values
}

type policyKey struct {
	name          string
	quota, window int64
}

// maxPolicies bounds the RateLimit-Policy cache; past it the cache starts
// over. Plans × distinct period lengths stay far below it in practice.
const maxPolicies = 4096

// New returns a Middleware for cfg, or an error wrapping
// [ErrInvalidConfig] when a required field is missing or a field is
// invalid.
func New(cfg Config) (*Middleware, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Middleware{
		cfg:        c,
		retryAfter: itoa(ceilSeconds(c.RetryAfter)),
		policies:   make(map[policyKey]string),
	}, nil
}

// Handle returns next wrapped by the middleware. Requests that are allowed
// reach next with their [Decision] in the request's context and the
// RateLimit header fields set; other requests get a problem response:
//
//   - 401: no subject.
//   - 402 (type quota-exceeded): over the hard limit, with Retry-After.
//   - 402 (type [ProblemNoPlan]): the limits source returned [ErrNoPlan].
//   - 500: the cost function failed or the subject cannot be stored.
//   - 503 with Retry-After: no decision within the deadline (fail-closed).
//
// None of them counts anything, except 402 over the limit, whose cost goes
// to the denied counter.
func (m *Middleware) Handle(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.serve(w, r, next)
	})
}

func (m *Middleware) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	cfg := &m.cfg
	subject, err := cfg.Subject(r)
	if err != nil || subject == "" {
		writeProblem(w, http.StatusUnauthorized, ProblemNoSubject, "Unauthorized",
			"The request does not identify an account.", nil)
		return
	}
	cost := int64(1)
	if cfg.Cost != nil {
		cost, err = cfg.Cost(r)
		if err == nil && cost <= 0 {
			err = ErrInvalidCost
		}
		if err != nil {
			cfg.Logger.ErrorContext(r.Context(), "quota: cost function failed",
				slog.String("subject", subject), slog.Any("error", err))
			writeServerError(w)
			return
		}
	}

	now := cfg.Now()
	ctx, cancel := decisionContext(r.Context(), cfg.Deadline)
	lim, err := cfg.Limits.Limits(ctx, subject, cfg.Meter)
	if err != nil {
		cancel()
		if errors.Is(err, ErrNoPlan) {
			writeProblem(w, http.StatusPaymentRequired, ProblemNoPlan, "No active plan",
				"The account has no active plan. Subscribe to a plan to use this API.", nil)
			return
		}
		m.unavailable(w, r, next, subject, "limits", err)
		return
	}
	period := lim.PeriodAt(now)
	limit := lim.Limit()
	capped := !lim.Unlimited()
	var res TakeResult
	if capped && limit == 0 {
		// The plan allows nothing: the decision needs no store, so the
		// store is not asked (no round trip, no 503 or fail-open pass
		// while it is down) and nothing is counted.
		err = checkSubject(subject)
	} else {
		res, err = cfg.Store.Take(ctx, TakeRequest{
			Subject:   subject,
			Meter:     cfg.Meter,
			Period:    period,
			Cost:      cost,
			Limit:     limit,
			Unlimited: !capped,
			ExpireAt:  period.End.Add(cfg.Retention),
		})
	}
	cancel()
	if err != nil {
		if isInputError(err) {
			cfg.Logger.ErrorContext(r.Context(), "quota: request cannot be metered",
				slog.String("subject", subject), slog.Any("error", err))
			writeServerError(w)
			return
		}
		m.unavailable(w, r, next, subject, "store", err)
		return
	}

	dc := &decisionCtx{Context: r.Context(), d: Decision{
		Subject:   subject,
		Plan:      lim.Plan,
		Meter:     cfg.Meter,
		Allowed:   res.Allowed,
		Cost:      cost,
		Limit:     limit,
		Unlimited: !capped,
		Included:  lim.Included,
		Soft:      lim.Soft,
		Used:      res.Used,
		Period:    period,
	}}
	d := &dc.d
	d.Remaining = -1
	if capped {
		d.Remaining = max(limit-res.Used, 0)
	}
	if lim.Overage && lim.Included > 0 {
		d.Overage = max(res.Used-lim.Included, 0)
	}
	if lim.Soft > 0 && res.Allowed && res.Used >= lim.Soft {
		d.SoftLimitReached = true
		d.SoftLimitCrossed = res.Used-cost < lim.Soft
	}
	r = r.WithContext(dc)
	h := w.Header()
	m.setRateLimit(h, dc, now)
	if !res.Allowed {
		if cfg.OnDeny != nil {
			cfg.OnDeny(r.Context(), *d)
		}
		cfg.Deny(w, r, *d)
		return
	}
	if d.SoftLimitReached {
		dc.hdr[1] = itoa(lim.Soft) // Retry-After's slot: unused when allowed
		h[headerSoftLimit] = dc.hdr[1:2:2]
		if d.SoftLimitCrossed && cfg.OnSoftLimit != nil {
			cfg.OnSoftLimit(r.Context(), *d)
		}
	}
	next.ServeHTTP(w, r)
}

// decisionContext returns the context of one decision: parent with a
// deadline at most d away. A parent whose own deadline comes sooner (such
// as one set by http.TimeoutHandler or the caller's server) already bounds
// the decision, and is returned as it is, which spares a timer and a
// context per request.
func decisionContext(parent context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if dl, ok := parent.Deadline(); ok && time.Until(dl) <= d {
		return parent, func() {}
	}
	return context.WithTimeout(parent, d)
}

// unavailable answers a request for which no decision could be made.
func (m *Middleware) unavailable(w http.ResponseWriter, r *http.Request, next http.Handler, subject, what string, err error) {
	cfg := &m.cfg
	if cfg.FailOpen {
		cfg.Logger.WarnContext(r.Context(), "quota: no decision, request let through (fail-open)",
			slog.String("subject", subject), slog.String("source", what), slog.Any("error", err))
		d := Decision{Subject: subject, Meter: cfg.Meter, Allowed: true, Degraded: true, Remaining: -1}
		next.ServeHTTP(w, r.WithContext(newContext(r.Context(), d)))
		return
	}
	cfg.Logger.WarnContext(r.Context(), "quota: no decision, request refused (fail-closed)",
		slog.String("subject", subject), slog.String("source", what), slog.Any("error", err))
	// A slice of its own: a header map's values may be written to
	// downstream, so none is shared between responses.
	w.Header()[headerRetry] = []string{m.retryAfter}
	writeProblem(w, http.StatusServiceUnavailable, ProblemUnavailable, "Service unavailable",
		"The request could not be metered. Retry later.", nil)
}

// isInputError reports whether a store refused the request itself, which no
// retry or fail-open can fix.
func isInputError(err error) bool {
	return errors.Is(err, ErrInvalidSubject) || errors.Is(err, ErrInvalidMeter) ||
		errors.Is(err, ErrInvalidCost) || errors.Is(err, ErrInvalidRequest)
}

// Decision is the outcome of metering one request. Handlers behind the
// middleware read it with [FromContext]. Its zero value is a denial of an
// unknown subject under a plan that allows nothing; [FromContext] reports
// whether a decision was made at all.
type Decision struct {
	// Subject is who the request is metered against.
	Subject string
	// Plan is the subject's plan, [Limits.Plan].
	Plan string
	// Meter is the counted meter.
	Meter string
	// Allowed reports whether the request was admitted.
	Allowed bool
	// Degraded reports that the request was let through uncounted because
	// no decision could be made (fail-open); the counts below are then
	// unknown and zero.
	Degraded bool
	// Cost is the request's units.
	Cost int64
	// Limit is the effective hard limit ([Limits.Limit]). Zero is a plan
	// that allows nothing, unless Unlimited is set (Limit is then 0).
	Limit int64
	// Unlimited reports that the plan has no hard limit
	// ([Limits.Unlimited]). It is false in a Degraded decision, where the
	// plan is unknown.
	Unlimited bool
	// Included and Soft are the plan's included units and soft limit.
	Included, Soft int64
	// Used is the period's billable count after this request (0 when the
	// plan allows nothing: the store is then not asked).
	Used int64
	// Remaining is Limit - Used, at least 0; -1 when Unlimited or
	// Degraded.
	Remaining int64
	// Overage is the units above Included counted this period, when the
	// plan allows overage.
	Overage int64
	// SoftLimitReached reports that Used is at or above a non-zero Soft.
	SoftLimitReached bool
	// SoftLimitCrossed reports that this request made Used reach Soft.
	SoftLimitCrossed bool
	// Period is the counting period; its End is when the count resets.
	Period Period
}

// Reset returns when the period's count resets: the period's end.
func (d Decision) Reset() time.Time { return d.Period.End }

type decisionKey struct{}

// decisionCtx is a context carrying a Decision: one allocation where
// context.WithValue and a *Decision would be two. Every other lookup goes
// to the parent, so cancellation and values propagate as usual. The
// middleware also keeps the response's header values in it (see
// [Middleware.setRateLimit]), which spares their []string: each response's
// header slices are backed by its own decisionCtx, so a handler that
// writes to one changes that response only.
type decisionCtx struct {
	context.Context
	d   Decision
	hdr [3]string // RateLimit; Retry-After when denied, else Quota-Soft-Limit; RateLimit-Policy
}

func (c *decisionCtx) Value(key any) any {
	if _, ok := key.(decisionKey); ok {
		return &c.d
	}
	return c.Context.Value(key)
}

// newContext returns a copy of ctx carrying d.
func newContext(ctx context.Context, d Decision) context.Context {
	return &decisionCtx{Context: ctx, d: d}
}

// FromContext returns the decision that the middleware stored in ctx: the
// context of a request that the middleware let through, or handed to a
// [DenyFunc]. It reports false for any other context.
func FromContext(ctx context.Context) (Decision, bool) {
	d, ok := ctx.Value(decisionKey{}).(*Decision)
	if !ok {
		return Decision{}, false
	}
	return *d, true
}
