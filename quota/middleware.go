package quota

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
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
	// DefaultReservationTTL is how long an unsettled reservation holds
	// its units when [Config.ReservationTTL] is zero.
	DefaultReservationTTL = 5 * time.Minute
)

// backgroundFactor times [Config.Deadline] is the deadline of each settle
// and refund that the middleware sends after a response.
const backgroundFactor = 10

// Reservation declares a meter whose amount a handler learns only after it
// has done the work, such as the tokens of a completion, the bytes of an
// upload or the seconds of a job. Before the handler runs, the middleware
// reserves Estimate's units in the same decision (one store call) that
// counts the request meter, and refuses the request with 402 when they do
// not fit under the meter's hard limit; the handler then reports what it
// used with [Settle]. See the package documentation, section Reservations.
//
// A Reservation is a plain value. Its zero value is not valid (it has no
// meter).
type Reservation struct {
	// Meter names the reserved meter. Required; it must satisfy the rules
	// of [ErrInvalidMeter] and differ from [Config.Meter] and from the
	// other reservations' meters.
	Meter string
	// Estimate returns the units to reserve for a request: the most it
	// may use, or a fair estimate when settling more than reserved is
	// acceptable (the excess is counted, past the hard limit if need
	// be). Required. A result of zero or less, or an error, is a bug in
	// the server: the middleware answers 500 and counts nothing. It must
	// be safe for concurrent use.
	Estimate CostFunc
}

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
	// Reserve lists the meters whose usage a request's handler learns
	// only afterwards and reports with [Settle]. They are checked and
	// reserved together with Meter, in one store call. The default (nil)
	// reserves nothing.
	Reserve []Reservation
	// ReservationTTL bounds an unsettled reservation: after it, units
	// reserved by a process that died before settling are released,
	// never billed. It must exceed the longest time a handler takes (a
	// settle after it still counts the units used, but they were no
	// longer held, so concurrent requests may have taken them: the meter
	// may then pass its hard limit by that settle). The default is five
	// minutes.
	ReservationTTL time.Duration
	// FailOpen lets requests through, uncounted, when no decision could be
	// made in time (store or limits source failed or exceeded Deadline);
	// the failure is logged. The default (false) is fail-closed: such
	// requests get 503 with Retry-After.
	FailOpen bool
	// Deadline bounds one decision: the limits source and the store call
	// together. The default is 100ms. A request whose context ends sooner
	// is decided within its own deadline. A store must honour its context
	// (see [NewRedisStore]). Each settle and refund, sent after a
	// response, has ten times Deadline.
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
	// Observer receives every request's outcome and every settle's and
	// refund's, for metrics and traces. The default (zero) observes
	// nothing, at no cost.
	Observer Observer
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
	case out.ReservationTTL < 0:
		return out, fmt.Errorf("%w: ReservationTTL is negative", ErrInvalidConfig)
	}
	if out.Meter == "" {
		out.Meter = DefaultMeter
	}
	if err := validMeter(out.Meter); err != nil {
		return out, fmt.Errorf("%w: Meter %q: %w", ErrInvalidConfig, out.Meter, err)
	}
	out.Reserve = slices.Clone(out.Reserve)
	for i, rv := range out.Reserve {
		if err := validMeter(rv.Meter); err != nil {
			return out, fmt.Errorf("%w: Reserve[%d].Meter %q: %w", ErrInvalidConfig, i, rv.Meter, err)
		}
		if rv.Meter == out.Meter {
			return out, fmt.Errorf("%w: Reserve[%d].Meter %q is Meter: the request meter is counted, not reserved", ErrInvalidConfig, i, rv.Meter)
		}
		for j := 0; j < i; j++ {
			if out.Reserve[j].Meter == rv.Meter {
				return out, fmt.Errorf("%w: Reserve[%d].Meter %q is reserved twice", ErrInvalidConfig, i, rv.Meter)
			}
		}
		if rv.Estimate == nil {
			return out, fmt.Errorf("%w: Reserve[%d].Estimate is required", ErrInvalidConfig, i)
		}
	}
	if out.ReservationTTL == 0 {
		out.ReservationTTL = DefaultReservationTTL
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
// [New], wrap handlers with [Middleware.Handle], and call
// [Middleware.Close] once the server has shut down, so that the settles
// and refunds it sends after responses are not cut short.
//
// A Middleware is safe for concurrent use. The zero value is not usable.
type Middleware struct {
	cfg        Config
	retryAfter string // precomputed Retry-After of a 503
	idPrefix   string // random, starts every take ID of this middleware
	seq        atomic.Uint64
	// resolves is set when the store undoes a lost take without ID by
	// itself (a LostTakeResolver): takes without holds then carry no ID
	// and are never refunded by the middleware.
	resolves bool
	bg       background

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
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("quota: random take ID prefix: %w", err)
	}
	m := &Middleware{
		cfg:        c,
		retryAfter: itoa(ceilSeconds(c.RetryAfter)),
		idPrefix:   hex.EncodeToString(rnd[:]) + "-",
		policies:   make(map[policyKey]string),
	}
	if lr, ok := c.Store.(LostTakeResolver); ok {
		m.resolves = lr.ResolvesLostTakes()
	}
	m.bg.idle.L = &m.bg.mu
	return m, nil
}

// Close waits until every settle and refund that the middleware has
// started in the background has ended, and returns nil. Each of them is
// bounded by its own deadline (ten times [Config.Deadline]), so Close
// returns within that after the last request. Call it once the HTTP server
// has shut down (after http.Server.Shutdown returns), before closing the
// store's Redis client; requests served after Close still work and start
// their own background calls, which a later Close waits for. A store that
// resolves lost takes by itself (a [LostTakeResolver]) may have its own
// background work: see [RedisStore.Wait].
func (m *Middleware) Close() error {
	m.bg.wait()
	return nil
}

// background counts the goroutines that settle and refund after a
// response, so that Close can wait for them. A sync.WaitGroup would not do:
// Close may run while requests still start goroutines.
type background struct {
	mu   sync.Mutex
	n    int
	idle sync.Cond
}

// goFunc runs f in a goroutine of its own, counted until it returns.
func (b *background) goFunc(f func()) {
	b.mu.Lock()
	b.n++
	b.mu.Unlock()
	go func() {
		defer b.done()
		f()
	}()
}

func (b *background) done() {
	b.mu.Lock()
	b.n--
	if b.n == 0 {
		b.idle.Broadcast()
	}
	b.mu.Unlock()
}

func (b *background) wait() {
	b.mu.Lock()
	for b.n > 0 {
		b.idle.Wait()
	}
	b.mu.Unlock()
}

// pending returns the number of background calls that have not ended.
func (b *background) pending() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// nextID returns a take ID unique to this middleware and, by its random
// prefix, to any other.
func (m *Middleware) nextID() string {
	var b [40]byte
	return string(strconv.AppendUint(append(b[:0], m.idPrefix...), m.seq.Add(1), 36))
}

// Handle returns next wrapped by the middleware. Requests that are allowed
// reach next with their [Decision] in the request's context and the
// RateLimit header fields set; other requests get a problem response:
//
//   - 401: no subject.
//   - 402 (type quota-exceeded): a meter over its hard limit (the problem's
//     "meter" names it), with Retry-After.
//   - 402 (type [ProblemNoPlan]): the limits source returned [ErrNoPlan].
//   - 500: the cost or an estimate function failed, or the subject cannot
//     be stored.
//   - 503 with Retry-After: no decision within the deadline (fail-closed).
//
// None of them counts anything billable: a 402 over a limit adds its
// units to the denied counters, and a 503 whose store call may have
// counted is refunded in the background (by the middleware, or by a store
// that is a [LostTakeResolver]).
func (m *Middleware) Handle(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.serve(w, r, next)
	})
}

func (m *Middleware) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	cfg := &m.cfg
	subject, err := cfg.Subject(r)
	if err != nil || subject == "" {
		m.observe(r.Context(), Observation{Outcome: Unauthenticated, Status: http.StatusUnauthorized, Meter: cfg.Meter}, 0)
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
			m.observe(r.Context(), Observation{Outcome: Failed, Status: http.StatusInternalServerError, Meter: cfg.Meter, Err: err}, 0)
			writeServerError(w)
			return
		}
	}
	var st *reqState
	var holds []Hold
	var plans []Limits
	if len(cfg.Reserve) > 0 {
		st = newReqState(len(cfg.Reserve))
		holds, plans = st.req.Reserve, st.plans
		for i, rv := range cfg.Reserve {
			est, err := rv.Estimate(r)
			if err == nil && est <= 0 {
				err = ErrInvalidCost
			}
			if err != nil {
				cfg.Logger.ErrorContext(r.Context(), "quota: estimate function failed",
					slog.String("subject", subject), slog.String("meter", rv.Meter), slog.Any("error", err))
				m.observe(r.Context(), Observation{Outcome: Failed, Status: http.StatusInternalServerError, Meter: rv.Meter, Err: err}, 0)
				writeServerError(w)
				return
			}
			holds[i] = Hold{Meter: rv.Meter, Amount: est, TTL: cfg.ReservationTTL}
		}
	}

	now := cfg.Now()
	var start time.Time // read only when observed: a clock read per request otherwise
	if cfg.Observer.Decided != nil {
		start = time.Now()
	}
	ctx, cancel := decisionContext(r.Context(), cfg.Deadline)
	lim, err := cfg.Limits.Limits(ctx, subject, cfg.Meter)
	for i := 0; err == nil && i < len(holds); i++ {
		plans[i], err = cfg.Limits.Limits(ctx, subject, holds[i].Meter)
	}
	if err != nil {
		cancel()
		if errors.Is(err, ErrNoPlan) {
			m.observe(r.Context(), Observation{Outcome: NoPlan, Status: http.StatusPaymentRequired, Meter: cfg.Meter}, since(start))
			writeProblem(w, http.StatusPaymentRequired, ProblemNoPlan, "No active plan",
				"The account has no active plan. Subscribe to a plan to use this API.", nil)
			return
		}
		m.unavailable(w, r, next, subject, "", "limits", err, since(start))
		return
	}
	period := lim.PeriodAt(now)
	limit := lim.Limit()
	capped := !lim.Unlimited()
	req := TakeRequest{
		Subject:   subject,
		Meter:     cfg.Meter,
		Period:    period,
		Cost:      cost,
		Limit:     limit,
		Unlimited: !capped,
		ExpireAt:  period.End.Add(cfg.Retention),
		Reserve:   holds,
	}
	if len(holds) > 0 || !m.resolves {
		// A record per take: holds are named after it, and a take whose
		// outcome is lost is refunded by it.
		req.ID = m.nextID()
	}
	// A meter whose plan allows nothing decides without the store: no
	// round trip, no 503 or fail-open pass while it is down, and nothing
	// counted.
	nothing := ""
	if capped && limit == 0 {
		nothing = cfg.Meter
	}
	for i := range holds {
		h, pl := &holds[i], &plans[i]
		h.Period = pl.PeriodAt(now)
		h.Limit, h.Unlimited = pl.Limit(), pl.Unlimited()
		h.ExpireAt = h.Period.End.Add(cfg.Retention)
		if nothing == "" && !h.Unlimited && h.Limit == 0 {
			nothing = h.Meter
		}
	}
	var res TakeResult
	if nothing != "" {
		err = checkSubject(subject)
		res.Exhausted = nothing
	} else {
		res, err = cfg.Store.Take(ctx, req)
	}
	cancel()
	took := since(start)
	if err != nil {
		if isInputError(err) {
			cfg.Logger.ErrorContext(r.Context(), "quota: request cannot be metered",
				slog.String("subject", subject), slog.Any("error", err))
			m.observe(r.Context(), Observation{Outcome: Failed, Status: http.StatusInternalServerError, Plan: lim.Plan, Meter: cfg.Meter, Err: err}, took)
			writeServerError(w)
			return
		}
		if req.ID != "" {
			// The store may have counted the take before failing (a
			// reply lost to the deadline): give it back, or leave a
			// tombstone for a take still on its way. That holds for
			// ErrDuplicateTake too: the middleware's IDs are unique, so
			// a duplicate is a retry (go-redis retries after a broken
			// connection) finding the take's own earlier run. (A take
			// without ID went to a store that resolves it by itself.)
			m.refund(r.Context(), req)
		}
		m.unavailable(w, r, next, subject, lim.Plan, "store", err, took)
		return
	}
	if !res.Allowed && res.Exhausted == "" {
		res.Exhausted = cfg.Meter // a Store of another package may leave it empty
	}

	dc := &decisionCtx{Context: r.Context(), d: Decision{
		Subject:   subject,
		Plan:      lim.Plan,
		Meter:     cfg.Meter,
		Allowed:   res.Allowed,
		Exhausted: res.Exhausted,
		Cost:      cost,
		Limit:     limit,
		Unlimited: !capped,
		Included:  lim.Included,
		Soft:      lim.Soft,
		Used:      res.Used,
		Reserved:  res.Reserved,
		Period:    period,
	}}
	d := &dc.d
	d.Remaining = -1
	if capped {
		d.Remaining = remaining(limit, res.Used, res.Reserved)
	}
	if lim.Overage && lim.Included > 0 {
		d.Overage = max(res.Used-lim.Included, 0)
	}
	if lim.Soft > 0 && res.Allowed && res.Used >= lim.Soft {
		d.SoftLimitReached = true
		d.SoftLimitCrossed = res.Used-cost < lim.Soft
	}
	if st != nil {
		st.req = req
		for i := range holds {
			h, pl := &holds[i], &plans[i]
			var hr HoldResult
			if i < len(res.Holds) {
				hr = res.Holds[i]
			}
			st.amounts[i] = h.Amount
			rd := &st.res[i]
			*rd = ReservationDecision{
				Meter: h.Meter, Plan: pl.Plan, Estimate: h.Amount,
				Limit: h.Limit, Unlimited: h.Unlimited, Included: pl.Included,
				Used: hr.Used, Reserved: hr.Reserved, Remaining: -1, Period: h.Period,
			}
			if !h.Unlimited {
				rd.Remaining = remaining(h.Limit, hr.Used, hr.Reserved)
			}
		}
		d.res = &st.res
		dc.st = st
	}
	r = r.WithContext(dc)
	h := w.Header()
	m.setRateLimit(h, dc, now)
	if !res.Allowed {
		if st != nil {
			st.done = true // nothing to settle
		}
		plan := lim.Plan
		for i := range holds {
			if holds[i].Meter == res.Exhausted {
				plan = plans[i].Plan
			}
		}
		m.observe(r.Context(), Observation{Outcome: Denied, Status: http.StatusPaymentRequired, Plan: plan, Meter: res.Exhausted}, took)
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
	m.observe(r.Context(), Observation{Outcome: Allowed, Plan: lim.Plan, Meter: cfg.Meter, SoftLimitCrossed: d.SoftLimitCrossed}, took)
	if st != nil {
		// Deferred, so that a handler that panics still settles (its
		// estimate, or what it settled before).
		defer m.settle(r.Context(), st)
	}
	next.ServeHTTP(w, r)
}

// observe passes o, taking took, to Config.Observer.Decided when it is set.
func (m *Middleware) observe(ctx context.Context, o Observation, took time.Duration) {
	if f := m.cfg.Observer.Decided; f != nil {
		o.Duration = took
		f(ctx, o)
	}
}

// since returns the time elapsed since start, or 0 for a zero start (the
// decision is not observed).
func since(start time.Time) time.Duration {
	if start.IsZero() {
		return 0
	}
	return time.Since(start)
}

// remaining is limit - used - reserved, at least 0, without overflow.
func remaining(limit, used, reserved int64) int64 {
	if used >= limit || reserved >= limit-used {
		return 0
	}
	return limit - used - reserved
}

// reqState is what a request with reservations needs after its handler:
// the take to settle (or refund) and the amounts the handler settled. Its
// mutex guards amounts and done: a handler may settle from several
// goroutines.
type reqState struct {
	req     TakeRequest
	plans   []Limits              // the reserved meters' limits
	res     []ReservationDecision // backs Decision.Reservations
	mu      sync.Mutex
	amounts []int64 // settled amounts, the estimates until Settle
	done    bool    // the handler returned: Settle is refused
	drop    bool    // degraded (fail-open): nothing is sent to the store

	// Backing arrays for up to inlineHolds reservations: one allocation
	// per request.
	holdBuf   [inlineHolds]Hold
	planBuf   [inlineHolds]Limits
	resBuf    [inlineHolds]ReservationDecision
	amountBuf [inlineHolds]int64
}

// inlineHolds is the number of reservations whose request state needs no
// allocation besides its own.
const inlineHolds = 2

// newReqState returns the state of a request with n reservations.
func newReqState(n int) *reqState {
	st := &reqState{}
	if n <= inlineHolds {
		st.req.Reserve, st.plans, st.res, st.amounts = st.holdBuf[:n:n], st.planBuf[:n:n], st.resBuf[:n:n], st.amountBuf[:n:n]
	} else {
		st.req.Reserve, st.plans, st.res, st.amounts = make([]Hold, n), make([]Limits, n), make([]ReservationDecision, n), make([]int64, n)
	}
	return st
}

// Settle reports the units of meter that the request whose context is ctx
// actually used: the handler calls it with its request's context before
// it returns. The middleware settles after the handler has returned, in
// the background (no round trip is added before the response): the
// reservation is released and n is counted, so settling less than the
// estimate releases the rest, and settling more counts the excess, even
// past the meter's hard limit: settling more than reserved is the only
// way past a hard limit, and only by the excess. A handler that returns
// without settling a meter settles its estimate. Calling Settle again
// replaces the amount.
//
// Settle returns an error wrapping [ErrInvalidSettle] when ctx is not the
// context of a request with a reservation of meter, when n is negative, or
// after the handler has returned. In a request let through without a
// decision (fail-open, [Decision.Degraded]) it accepts n and counts
// nothing, like the rest of that request. It is safe for concurrent use.
func Settle(ctx context.Context, meter string, n int64) error {
	st, _ := ctx.Value(settleKey{}).(*reqState)
	if st == nil {
		return fmt.Errorf("%w: the request has no reservation (is the handler behind a quota middleware with Config.Reserve?)", ErrInvalidSettle)
	}
	if n < 0 {
		return fmt.Errorf("%w: negative amount %d", ErrInvalidSettle, n)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.done {
		return fmt.Errorf("%w: settled after the handler returned", ErrInvalidSettle)
	}
	for i := range st.req.Reserve {
		if st.req.Reserve[i].Meter == meter {
			st.amounts[i] = n
			return nil
		}
	}
	return fmt.Errorf("%w: meter %q is not reserved by this request", ErrInvalidSettle, meter)
}

// settle sends the request's settlement in the background, once its
// handler has returned.
func (m *Middleware) settle(parent context.Context, st *reqState) {
	st.mu.Lock()
	st.done = true
	drop := st.drop
	amounts := st.amounts
	st.mu.Unlock()
	if drop {
		return
	}
	m.inBackground(parent, "settle", func(ctx context.Context) error {
		return m.cfg.Store.Settle(ctx, st.req, amounts)
	})
}

// refund sends a refund of req in the background.
func (m *Middleware) refund(parent context.Context, req TakeRequest) {
	m.inBackground(parent, "refund", func(ctx context.Context) error {
		return m.cfg.Store.Refund(ctx, req)
	})
}

// inBackground runs f in a goroutine counted for Close, with a context that
// keeps parent's values but not its cancellation (the response has been
// written, or is being written) and has a deadline of its own.
func (m *Middleware) inBackground(parent context.Context, what string, f func(context.Context) error) {
	ctx := context.WithoutCancel(parent)
	m.bg.goFunc(func() {
		ctx, cancel := context.WithTimeout(ctx, backgroundFactor*m.cfg.Deadline)
		defer cancel()
		obs := m.cfg.Observer.Background
		var start time.Time
		if obs != nil {
			start = time.Now()
		}
		err := f(ctx)
		if err != nil {
			// A failed settle leaves the reservation to expire (its units
			// are then not billed); a failed refund may leave a refused
			// request's units counted.
			m.cfg.Logger.ErrorContext(ctx, "quota: "+what+" failed", slog.Any("error", err))
		}
		if obs != nil {
			obs(ctx, BackgroundObservation{Op: what, Duration: time.Since(start), Err: err})
		}
	})
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
// plan is the subject's plan when the limits source answered, else "".
func (m *Middleware) unavailable(w http.ResponseWriter, r *http.Request, next http.Handler, subject, plan, what string, err error, took time.Duration) {
	cfg := &m.cfg
	if cfg.FailOpen {
		cfg.Logger.WarnContext(r.Context(), "quota: no decision, request let through (fail-open)",
			slog.String("subject", subject), slog.String("source", what), slog.Any("error", err))
		m.observe(r.Context(), Observation{Outcome: FailOpen, Plan: plan, Meter: cfg.Meter, Err: err}, took)
		dc := &decisionCtx{Context: r.Context(), d: Decision{Subject: subject, Meter: cfg.Meter, Allowed: true, Degraded: true, Remaining: -1}}
		if len(cfg.Reserve) > 0 {
			// Settle works, and counts nothing, as the request.
			st := newReqState(len(cfg.Reserve))
			st.drop = true
			for i, rv := range cfg.Reserve {
				st.req.Reserve[i].Meter = rv.Meter
			}
			dc.st = st
		}
		next.ServeHTTP(w, r.WithContext(dc))
		return
	}
	cfg.Logger.WarnContext(r.Context(), "quota: no decision, request refused (fail-closed)",
		slog.String("subject", subject), slog.String("source", what), slog.Any("error", err))
	m.observe(r.Context(), Observation{Outcome: Unavailable, Status: http.StatusServiceUnavailable, Plan: plan, Meter: cfg.Meter, Err: err}, took)
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
// middleware read it with [FromContext]. Its fields describe the request
// meter ([Config.Meter]); [Decision.Reservations] describes the reserved
// meters. Its zero value is a denial of an unknown subject under a plan
// that allows nothing; [FromContext] reports whether a decision was made
// at all. A Decision is a value: copies share only the slice behind
// Reservations, which they never write.
type Decision struct {
	// Subject is who the request is metered against.
	Subject string
	// Plan is the subject's plan, [Limits.Plan].
	Plan string
	// Meter is the counted meter.
	Meter string
	// Allowed reports whether the request was admitted.
	Allowed bool
	// Exhausted names the meter whose hard limit refused the request:
	// Meter or a reserved meter. It is empty when Allowed.
	Exhausted string
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
	// store was not asked: a meter of the plan allows nothing).
	Used int64
	// Reserved is the meter's units held by unsettled reservations of
	// other requests (when other routes reserve the request meter).
	Reserved int64
	// Remaining is Limit - Used - Reserved, at least 0; -1 when Unlimited
	// or Degraded.
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

	res *[]ReservationDecision // nil without Config.Reserve
}

// Reset returns when the period's count resets: the period's end.
func (d Decision) Reset() time.Time { return d.Period.End }

// Reservations returns the decision's reserved meters, in the order of
// [Config.Reserve]; nil when the middleware reserves nothing, or in a
// Degraded decision. The slice is a copy.
func (d Decision) Reservations() []ReservationDecision {
	if d.res == nil {
		return nil
	}
	return slices.Clone(*d.res)
}

// reservation returns the reserved meter named meter, if any.
func (d *Decision) reservation(meter string) (*ReservationDecision, bool) {
	if d.res == nil {
		return nil, false
	}
	for i := range *d.res {
		if rd := &(*d.res)[i]; rd.Meter == meter {
			return rd, true
		}
	}
	return nil, false
}

// ReservationDecision is the state of one reserved meter ([Reservation])
// in a [Decision], as the decision left it. It is a plain value; its zero
// value describes nothing reserved of an unnamed meter.
type ReservationDecision struct {
	// Meter names the meter.
	Meter string
	// Plan is [Limits.Plan] of the meter's limits.
	Plan string
	// Estimate is the units reserved for the request.
	Estimate int64
	// Limit and Unlimited are the meter's hard limit, as in [Decision].
	Limit     int64
	Unlimited bool
	// Included is the plan's included units of the meter.
	Included int64
	// Used is the meter's billable (settled) count.
	Used int64
	// Reserved is the units held by unsettled reservations, this
	// request's included when it was allowed.
	Reserved int64
	// Remaining is Limit - Used - Reserved, at least 0; -1 when
	// Unlimited.
	Remaining int64
	// Period is the meter's counting period.
	Period Period
}

type (
	decisionKey struct{}
	settleKey   struct{}
)

// decisionCtx is a context carrying a Decision: one allocation where
// context.WithValue and a *Decision would be two. Every other lookup goes
// to the parent, so cancellation and values propagate as usual. The
// middleware also keeps the response's header values in it (see
// [Middleware.setRateLimit]), which spares their []string: each response's
// header slices are backed by its own decisionCtx, so a handler that
// writes to one changes that response only. A request with reservations
// also finds its settle state in it ([Settle]).
type decisionCtx struct {
	context.Context
	d   Decision
	st  *reqState
	hdr [3]string // RateLimit; Retry-After when denied, else Quota-Soft-Limit; RateLimit-Policy
}

func (c *decisionCtx) Value(key any) any {
	switch key.(type) {
	case decisionKey:
		return &c.d
	case settleKey:
		if c.st != nil {
			return c.st
		}
	}
	return c.Context.Value(key)
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
