package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/billkit/billkit/webhook/internal/claimtoken"
)

// Defaults and limits of [Config].
const (
	// DefaultTolerance is the default maximum age of a signature's
	// timestamp: five minutes, as in stripe-go and Stripe's libraries.
	DefaultTolerance = 5 * time.Minute
	// DefaultMaxBodyBytes is the default body size limit: 1 MiB. Stripe
	// does not publish a maximum event size; events are typically a few
	// kilobytes, and the largest (invoices with many lines, expanded
	// objects) stay well below this.
	DefaultMaxBodyBytes int64 = 1 << 20
	// DefaultLease is the default lease of a claim: one minute.
	DefaultLease = time.Minute
	// DefaultRetention is the default retention of a done record: seven
	// days.
	DefaultRetention = 7 * 24 * time.Hour
	// MinRetention is the shortest accepted retention: Stripe retries a
	// failed delivery for up to three days, so a done record must outlive
	// that window or a late retry would run the handlers again.
	MinRetention = 72 * time.Hour
)

// Errors returned by webhook.
var (
	// ErrInvalidConfig is returned, wrapped with the name of the field at
	// fault, by [New] for a [Config] without a non-empty secret or a
	// store, a negative duration or size, a HandlerTimeout not below the
	// Lease or a Retention below [MinRetention], and by [NewRedisStore] for
	// a nil client or a Prefix holding a brace.
	ErrInvalidConfig = errors.New("webhook: invalid config")
	// ErrLeaseLost is returned by [Store.Complete] and [Store.Release] when
	// the token no longer holds the event's lease: it expired and the event
	// may have been claimed by another delivery.
	ErrLeaseLost = errors.New("webhook: lease lost")
	// ErrInvalidArgument is returned by the stores for an empty event ID or
	// token, or a non-positive lease or retention.
	ErrInvalidArgument = errors.New("webhook: invalid argument")
)

// EventFunc handles one verified event; a non-nil error makes the delivery
// fail (500) and the event retryable. A panic counts as an error. A handler returns nil for an event it
// does not act on, such as one not meant for this application (see the
// package doc): the event is then acknowledged.
//
// The context carries a deadline of Config.HandlerTimeout, which ends before
// the claim's lease so that no other delivery takes the event over while a
// handler that honours ctx is still running. It is not canceled when Stripe
// disconnects, so a handler is not interrupted half way by a client timeout.
//
// The event and its Data must not be modified: every handler of a delivery
// sees the same value. A nil EventFunc is ignored by [Handler.On] and
// [Handler.OnAny].
type EventFunc func(ctx context.Context, event *stripe.Event) error

// Config configures a [Handler]. Secrets and Store are required; every other
// zero field means its documented default. The zero Config is not valid:
// [New] rejects it with [ErrInvalidConfig].
type Config struct {
	// Secrets are the endpoint's signing secrets (whsec_...). A payload is
	// accepted when it is signed with any of them, so a secret can be
	// rolled by listing the new one beside the old until the old expires.
	// Empty strings are ignored; at least one secret is required.
	Secrets []string

	// Tolerance is the maximum age of the signature's timestamp; older
	// deliveries are rejected as replays. A timestamp more than Tolerance
	// ahead of Now is rejected too (stripe-go checks only the age), so a
	// payload signed for a future time cannot be replayed until then. The
	// default value is [DefaultTolerance] (5 minutes).
	Tolerance time.Duration

	// MaxBodyBytes is the largest accepted body; a larger one is answered
	// with 413 without being read further. The default value is
	// [DefaultMaxBodyBytes] (1 MiB).
	MaxBodyBytes int64

	// Store records claimed and handled events. Required: use a
	// [RedisStore] when several processes serve the endpoint, a
	// [MemoryStore] for a single process or tests, or your own database
	// (see the package doc).
	Store Store

	// Lease is how long a claim holds an event before another delivery may
	// take it over, for example after the holder crashed. It must exceed
	// the time handlers take. The default value is [DefaultLease]
	// (1 minute).
	Lease time.Duration

	// HandlerTimeout is the deadline of the context passed to handlers. It
	// must be shorter than Lease. The default value is four fifths of the
	// Lease (48 seconds for the default lease).
	HandlerTimeout time.Duration

	// Retention is how long a handled event's record is kept, so that
	// duplicates and late retries within it are acknowledged without
	// running the handlers. It must be at least [MinRetention] (72 hours,
	// Stripe's retry window). The default value is [DefaultRetention]
	// (7 days).
	Retention time.Duration

	// StrictAPIVersion rejects (400) events whose api_version differs from
	// the version stripe-go is pinned to ([stripe.APIVersion]). By default
	// such events are accepted: the Stripe CLI and many accounts send other
	// versions, and Stripe disables endpoints that keep failing. The
	// trade-off: without strictness a handler that decodes event.Data.Raw
	// into stripe-go's types may meet fields renamed or reshaped by another
	// version; check event.APIVersion where that matters. With it, a
	// version mismatch fails every delivery until the endpoint's version is
	// changed. The default value is false.
	StrictAPIVersion bool

	// Observer receives every delivery's outcome, for metrics and
	// traces. The default value (zero) observes nothing.
	Observer Observer

	// Logger receives one record per delivery (event id, type, outcome)
	// and handler and store errors. Secrets, signatures and payloads are
	// never logged. The default value (nil) is [slog.Default] as of [New].
	Logger *slog.Logger

	// Now returns the current time, against which the signature timestamp
	// is checked. The default value is [time.Now].
	Now func() time.Time
}

// withDefaults returns c with its zero fields set to their defaults, or an
// error wrapping [ErrInvalidConfig] that names the field at fault.
func (c Config) withDefaults() (Config, error) {
	secrets := make([]string, 0, len(c.Secrets))
	for _, s := range c.Secrets {
		if s != "" {
			secrets = append(secrets, s)
		}
	}
	if len(secrets) == 0 {
		return c, fmt.Errorf("%w: Secrets holds no non-empty signing secret", ErrInvalidConfig)
	}
	c.Secrets = secrets
	if c.Store == nil {
		return c, fmt.Errorf("%w: Store is required", ErrInvalidConfig)
	}
	switch {
	case c.Tolerance < 0:
		return c, fmt.Errorf("%w: negative Tolerance", ErrInvalidConfig)
	case c.MaxBodyBytes < 0:
		return c, fmt.Errorf("%w: negative MaxBodyBytes", ErrInvalidConfig)
	case c.Lease < 0:
		return c, fmt.Errorf("%w: negative Lease", ErrInvalidConfig)
	case c.HandlerTimeout < 0:
		return c, fmt.Errorf("%w: negative HandlerTimeout", ErrInvalidConfig)
	case c.Retention < 0:
		return c, fmt.Errorf("%w: negative Retention", ErrInvalidConfig)
	}
	if c.Tolerance == 0 {
		c.Tolerance = DefaultTolerance
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.Lease == 0 {
		c.Lease = DefaultLease
	}
	if c.HandlerTimeout == 0 {
		c.HandlerTimeout = c.Lease / 5 * 4
	}
	if c.HandlerTimeout >= c.Lease {
		return c, fmt.Errorf("%w: HandlerTimeout %v must be shorter than Lease %v", ErrInvalidConfig, c.HandlerTimeout, c.Lease)
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.Retention < MinRetention {
		return c, fmt.Errorf("%w: Retention %v is shorter than MinRetention %v, Stripe's retry window", ErrInvalidConfig, c.Retention, MinRetention)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}

// Handler is the http.Handler of a Stripe webhook endpoint. It verifies each
// delivery's signature, decodes the event, claims the event ID in the
// [Store], runs the handlers registered for the event's type and answers:
//
//	200  every handler succeeded, the event was already handled, or no
//	     handler is registered for its type
//	400  missing or invalid signature, a timestamp outside the tolerance
//	     (stale or ahead), malformed JSON, an event without id or type,
//	     or (StrictAPIVersion) another api_version
//	405  a method other than POST (with Allow: POST)
//	409  another delivery of the same event holds its lease
//	413  the body exceeds MaxBodyBytes
//	500  a handler failed (the event stays retryable)
//	503  the Store failed
//
// Error bodies are application/problem+json (RFC 9457) and carry no
// internal detail.
//
// A Handler is safe for concurrent use. [Handler.On] and [Handler.OnAny] may
// be called at any time, also while the Handler serves: a registration
// applies to deliveries that start after it. Use [New]; the zero value is
// not usable.
type Handler struct {
	cfg Config

	mu     sync.RWMutex
	byType map[stripe.EventType][]EventFunc
	any    []EventFunc
}

// New returns a Handler for cfg, or an error wrapping [ErrInvalidConfig]
// when cfg lacks a secret or a store, or holds an invalid value (see
// [Config]).
func New(cfg Config) (*Handler, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Handler{cfg: c, byType: make(map[stripe.EventType][]EventFunc)}, nil
}

var _ http.Handler = (*Handler)(nil)

// On registers fns, each an [EventFunc], for events of eventType. Several
// handlers may be registered for a type, by one or several calls; they run
// in registration order, before the [Handler.OnAny] handlers. The first
// error stops the run: the delivery fails, and a redelivery runs every
// handler again, including those that had succeeded, so each handler's
// effect must be idempotent or transactional. Nil functions are ignored.
func (h *Handler) On(eventType stripe.EventType, fns ...EventFunc) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, fn := range fns {
		if fn != nil {
			h.byType[eventType] = append(h.byType[eventType], fn)
		}
	}
}

// OnAny registers catch-all [EventFunc]s that run for every event, after
// the handlers of the event's type, in registration order, and fail the
// delivery like them. Nil functions are ignored. An event whose type has no
// handler and for which no OnAny handler is registered is acknowledged
// without touching the Store.
func (h *Handler) OnAny(fns ...EventFunc) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, fn := range fns {
		if fn != nil {
			h.any = append(h.any, fn)
		}
	}
}

// handlersFor returns the handlers to run for t, in order.
func (h *Handler) handlersFor(t stripe.EventType) []EventFunc {
	h.mu.RLock()
	defer h.mu.RUnlock()
	typed := h.byType[t]
	if len(h.any) == 0 {
		return typed
	}
	fns := make([]EventFunc, 0, len(typed)+len(h.any))
	return append(append(fns, typed...), h.any...)
}

// storeTimeout bounds Complete and Release, which run detached from the
// request's cancellation.
const storeTimeout = 5 * time.Second

// ServeHTTP handles one delivery; see [Handler] for the responses.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	obs := &h.cfg.Observer
	if obs.Start != nil {
		ctx = obs.Start(ctx)
	}
	var start time.Time
	if obs.Done != nil {
		start = time.Now()
	}
	d, detail := h.deliver(ctx, w, r)
	if obs.Done != nil {
		d.Duration = time.Since(start)
		obs.Done(ctx, d)
	}
	switch d.Status {
	case http.StatusOK:
		writeAck(w, detail)
	case http.StatusMethodNotAllowed:
		w.Header().Set("Allow", http.MethodPost)
		fallthrough
	default:
		writeProblem(w, d.Status, detail)
	}
}

// deliver verifies, deduplicates and handles one delivery. It returns the
// delivery's outcome and the detail of its response: the ack's result for
// a 200, the problem's detail otherwise.
func (h *Handler) deliver(ctx context.Context, w http.ResponseWriter, r *http.Request) (Delivery, string) {
	log := h.cfg.Logger
	if r.Method != http.MethodPost {
		return Delivery{Outcome: BadMethod, Status: http.StatusMethodNotAllowed, Err: errMethod}, "webhook deliveries use POST"
	}
	tooLarge := func() (Delivery, string) {
		return Delivery{Outcome: TooLarge, Status: http.StatusRequestEntityTooLarge, Err: errTooLarge},
			fmt.Sprintf("the body exceeds %d bytes", h.cfg.MaxBodyBytes)
	}
	if r.ContentLength > h.cfg.MaxBodyBytes {
		log.WarnContext(ctx, "webhook: body too large", "content_length", r.ContentLength, "limit", h.cfg.MaxBodyBytes)
		return tooLarge()
	}
	body := r.Body
	if body == nil {
		body = http.NoBody
	}
	payload, err := io.ReadAll(http.MaxBytesReader(w, body, h.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			log.WarnContext(ctx, "webhook: body too large", "limit", h.cfg.MaxBodyBytes)
			return tooLarge()
		}
		log.WarnContext(ctx, "webhook: body unreadable")
		return Delivery{Outcome: Malformed, Status: http.StatusBadRequest, Err: errUnreadable}, "the body could not be read"
	}

	ev, err := h.constructEvent(payload, r.Header.Get(signatureHeader))
	if err != nil {
		log.WarnContext(ctx, "webhook: rejected", "reason", err.Error())
		return Delivery{Outcome: rejection(err), Status: http.StatusBadRequest, Err: err}, err.Error()
	}
	d := Delivery{EventID: ev.ID, EventType: string(ev.Type), APIVersion: ev.APIVersion}
	attrs := []any{"event_id", ev.ID, "event_type", string(ev.Type)}

	fns := h.handlersFor(ev.Type)
	if len(fns) == 0 {
		log.DebugContext(ctx, "webhook: no handler for event type", attrs...)
		d.Outcome, d.Status = Ignored, http.StatusOK
		return d, "ignored"
	}

	const unrecorded = "the event could not be recorded; it will be accepted on a later delivery"
	claim, err := h.cfg.Store.Claim(ctx, ev.ID, h.cfg.Lease)
	if err != nil {
		log.ErrorContext(ctx, "webhook: store claim failed", append(attrs, "err", err)...)
		d.Outcome, d.Status, d.Err = StoreFailed, http.StatusServiceUnavailable, err
		return d, unrecorded
	}
	switch claim.Status {
	case Done:
		log.InfoContext(ctx, "webhook: duplicate delivery", attrs...)
		d.Outcome, d.Status = Duplicate, http.StatusOK
		return d, "duplicate"
	case InFlight:
		log.InfoContext(ctx, "webhook: event in flight elsewhere", attrs...)
		d.Outcome, d.Status, d.Err = InFlightElsewhere, http.StatusConflict, errInFlight
		return d, "this event is being handled by another delivery"
	case Claimed:
	default:
		log.ErrorContext(ctx, "webhook: store returned an unknown claim status", append(attrs, "status", int(claim.Status))...)
		d.Outcome, d.Status, d.Err = StoreFailed, http.StatusServiceUnavailable, fmt.Errorf("unknown claim status %d", int(claim.Status))
		return d, unrecorded
	}

	detached := context.WithoutCancel(ctx)
	if err := h.run(claimtoken.NewContext(detached, claim.Token), fns, ev); err != nil {
		log.ErrorContext(ctx, "webhook: handler failed", append(attrs, "err", err)...)
		ctx, cancel := context.WithTimeout(detached, storeTimeout)
		defer cancel()
		if rerr := h.cfg.Store.Release(ctx, ev.ID, claim.Token); rerr != nil {
			// The lease expires by itself; a redelivery after it runs again.
			log.ErrorContext(ctx, "webhook: store release failed", append(attrs, "err", rerr)...)
		}
		d.Outcome, d.Status, d.Err = HandlerFailed, http.StatusInternalServerError, err
		return d, "the event could not be handled; it will be retried"
	}

	cctx, cancel := context.WithTimeout(detached, storeTimeout)
	defer cancel()
	switch err := h.cfg.Store.Complete(cctx, ev.ID, claim.Token, h.cfg.Retention); {
	case errors.Is(err, ErrLeaseLost):
		// The handlers outlived the lease: another delivery may have run
		// them too. Their effect is applied, so the answer is still 200.
		log.WarnContext(ctx, "webhook: lease expired before completion; raise Config.Lease", attrs...)
	case err != nil:
		// The effect is applied; a retry would apply it again. The claim
		// expires after its lease.
		log.ErrorContext(ctx, "webhook: store complete failed", append(attrs, "err", err)...)
	default:
		log.InfoContext(ctx, "webhook: handled", attrs...)
	}
	d.Outcome, d.Status = Handled, http.StatusOK
	return d, "handled"
}

// rejection returns the outcome of a payload that constructEvent refused.
func rejection(err error) Outcome {
	switch {
	case errors.Is(err, errNotSigned), errors.Is(err, errInvalidHeader), errors.Is(err, errInvalidSignature):
		return BadSignature
	case errors.Is(err, errStale):
		return Stale
	default:
		return Malformed
	}
}

// TokenFromContext returns the token of the [Store] claim under which an
// [EventFunc] runs, for a handler that marks the event done in its own
// transaction (see the package doc). ok is false outside a claimed run.
// Tests of such a handler supply a token with
// [github.com/billkit/billkit/webhook/webhooktest.ContextWithToken].
func TokenFromContext(ctx context.Context) (token string, ok bool) {
	return claimtoken.FromContext(ctx)
}

// run calls fns in order under the handler deadline and stops at the first
// error; a panic is returned as an error.
func (h *Handler) run(ctx context.Context, fns []EventFunc, ev *stripe.Event) (err error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.HandlerTimeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("webhook: handler panicked: %v", p)
		}
	}()
	for _, fn := range fns {
		if err := fn(ctx, ev); err != nil {
			return err
		}
	}
	return nil
}

// ack is the body of a 200 answer.
type ack struct {
	Received bool   `json:"received"`
	Result   string `json:"result"`
}

func writeAck(w http.ResponseWriter, result string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(ack{Received: true, Result: result})
}
