package checkout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"

	"github.com/stripe/stripe-go/v76"

	"github.com/billkit/billkit/internal/problem"
)

// DefaultMaxBodyBytes is the largest request body [Handler] reads when
// [HandlerConfig.MaxBodyBytes] is zero: 64 KiB.
const DefaultMaxBodyBytes = 64 << 10

// SubjectFunc returns the authenticated subject (the application's account
// ID) of r, from the caller's authentication: a session cookie, an API key,
// a verified token. It must never trust a client-chosen value. An error or
// an empty subject makes [Handler] answer 401; a subject that breaks
// billkit's subject rule (over 200 bytes, or holding '{', '}' or a control
// character) is a server error, 500, that never reaches Stripe. It must be
// safe for concurrent use.
type SubjectFunc func(r *http.Request) (string, error)

// CustomerFunc returns the Stripe customer ID of subject, for the billing
// portal. It returns an error wrapping [ErrNoCustomer] (or an empty ID and a
// nil error) when the subject has no Stripe customer yet, which [Handler]
// answers with 409; any other error is answered with 503. It must be safe
// for concurrent use.
type CustomerFunc func(ctx context.Context, subject string) (customerID string, err error)

// HandlerConfig configures [Handler]. Zero fields mean the documented
// defaults; the zero HandlerConfig is invalid, as Sessions and Subject are
// required.
type HandlerConfig struct {
	// Sessions creates the sessions. Required.
	Sessions *Sessions
	// Subject authenticates a request. Required.
	Subject SubjectFunc
	// Customer finds a subject's Stripe customer. It is needed by
	// [Handler.Portal] only: when it is nil, the portal answers 503
	// and checkout creates sessions without a known customer.
	Customer CustomerFunc
	// MaxBodyBytes limits the request body; a larger body is answered with
	// 413. The default value is [DefaultMaxBodyBytes] (64 KiB).
	MaxBodyBytes int64
	// Observer receives the outcome of every request, for metrics and
	// traces. The default value (zero) observes nothing.
	Observer Observer
	// Logger receives one record per failed Stripe call or lookup, never
	// with a secret. The default value, nil, means [slog.Default] as it is
	// when [NewHandler] is called.
	Logger *slog.Logger
}

func (c *HandlerConfig) setDefaults() {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Handler serves checkout's two JSON endpoints, [Handler.Checkout], which
// creates a Checkout session for the authenticated subject, and
// [Handler.Portal], a billing-portal session. Both accept POST only and
// answer errors with application/problem+json bodies (RFC 9457) that hold
// no internal detail.
//
// A Handler is an [http.Handler] that routes both endpoints by the last
// element of the request path: a path ending in "/checkout" (or equal to
// "checkout") is served by Checkout, one ending in "/portal" by Portal, and
// any other path gets 404. Mount it on a subtree, as in
//
//	mux.Handle("/billing/", h) // POST /billing/checkout, POST /billing/portal
//
// or mount [Handler.Checkout] and [Handler.Portal] on paths of their own.
// Leave the method out of a mux pattern: the Handler answers other methods
// with its own 405 problem.
//
// A Handler is safe for concurrent use. The zero value is not usable; build
// one with [NewHandler], or with [NotConfigured] when Stripe is not set up.
type Handler struct {
	cfg           HandlerConfig
	notConfigured string // non-empty: every request gets 503 with this detail
}

var _ http.Handler = (*Handler)(nil)

// NewHandler returns a Handler for cfg. It returns an error wrapping
// [ErrInvalidConfig], naming the field, when cfg is invalid.
func NewHandler(cfg HandlerConfig) (*Handler, error) {
	cfg.setDefaults()
	switch {
	case cfg.Sessions == nil:
		return nil, fmt.Errorf("%w: HandlerConfig.Sessions is nil (build one with checkout.New, or use checkout.NotConfigured)", ErrInvalidConfig)
	case cfg.Subject == nil:
		return nil, fmt.Errorf("%w: HandlerConfig.Subject is nil", ErrInvalidConfig)
	case cfg.MaxBodyBytes < 0:
		return nil, fmt.Errorf("%w: HandlerConfig.MaxBodyBytes must not be negative", ErrInvalidConfig)
	}
	return &Handler{cfg: cfg}, nil
}

// NotConfigured returns a Handler whose every response, on every path and
// through [Handler.Checkout] and [Handler.Portal] alike, is 503 with a
// problem body whose detail is detail, for a server that runs without
// Stripe; detail should say how to configure it, for example "set
// STRIPE_SECRET_KEY and PRICE_<TIER> to enable checkout". An empty detail
// means "checkout is not configured".
func NotConfigured(detail string) *Handler {
	if detail == "" {
		detail = "checkout is not configured"
	}
	return &Handler{notConfigured: detail}
}

// Configured reports whether h creates sessions (false for a handler built
// by [NotConfigured]).
func (h *Handler) Configured() bool { return h.notConfigured == "" }

// ServeHTTP serves a request for either endpoint, routed by the last
// element of its path (see [Handler]); another path gets 404.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.notConfigured != "" {
		writeProblem(w, apiProblem{Status: http.StatusServiceUnavailable, Detail: h.notConfigured})
		return
	}
	p := r.URL.Path
	switch p[strings.LastIndexByte(p, '/')+1:] {
	case "checkout":
		h.serveCheckout(w, r)
	case "portal":
		h.servePortal(w, r)
	default:
		writeProblem(w, apiProblem{Status: http.StatusNotFound, Detail: "no such endpoint; POST to .../checkout or .../portal"})
	}
}

// Checkout returns the checkout endpoint, whatever the request's path. It
// takes POST with a JSON body {"tier":"pro"} (and an optional "email" to
// prefill) and answers 200 with {"id":"cs_...",
// "url":"https://checkout.stripe.com/..."}. An Idempotency-Key header, when
// present, makes retries of the same request return the same session; it is
// scoped to the subject, so two subjects never share a Stripe key.
//
// Errors: 405 for a method other than POST, 401 without a subject, 415 for a
// body that is not application/json, 413 for a body over the limit, 400 for
// malformed JSON, unknown fields, an unknown tier (the body lists the valid
// tiers), a bad email or Idempotency-Key, 409 when an Idempotency-Key is
// reused with another request, 502 when Stripe fails (the body carries
// Stripe's request ID when there is one), 504 when Stripe does not answer
// within the configured timeout, 503 when not configured or when the
// customer lookup fails.
func (h *Handler) Checkout() http.Handler { return http.HandlerFunc(h.serveCheckout) }

// Portal returns the billing-portal endpoint, whatever the request's path.
// It takes POST (with no body, or an empty JSON object) and answers 200
// with {"id":"bps_...","url":"https://billing.stripe.com/..."} for the
// authenticated subject's Stripe customer, found by
// [HandlerConfig.Customer]. A subject without a Stripe customer gets 409
// (it must complete a checkout first). The other errors are as for
// [Handler.Checkout]; 503 also answers a handler without a [CustomerFunc].
func (h *Handler) Portal() http.Handler { return http.HandlerFunc(h.servePortal) }

// checkoutBody is the JSON body of a checkout request. The subject is never
// part of it: it comes from [SubjectFunc].
type checkoutBody struct {
	Tier  string `json:"tier"`
	Email string `json:"email"`
}

// serveCheckout serves [Handler.Checkout].
func (h *Handler) serveCheckout(w http.ResponseWriter, r *http.Request) {
	h.observe(w, r, OpCheckout, h.checkout)
}

func (h *Handler) checkout(w http.ResponseWriter, r *http.Request, o *Observation) {
	subject, ok := h.preamble(w, r)
	if !ok {
		return
	}
	key, ok := h.idempotencyKey(w, r, "checkout", subject)
	if !ok {
		return
	}
	var body checkoutBody
	if !h.decode(w, r, &body, true) {
		return
	}
	cat := h.cfg.Sessions.cfg.Catalog
	if strings.TrimSpace(body.Tier) == "" {
		valid := cat.Tiers()
		writeProblem(w, apiProblem{Status: http.StatusBadRequest,
			Detail:     "tier is required; valid tiers: " + strings.Join(valid, ", "),
			ValidTiers: valid})
		return
	}
	tier, ok := cat.Tier(normalizeTier(body.Tier))
	if !ok {
		valid := cat.Tiers()
		writeProblem(w, apiProblem{Status: http.StatusBadRequest,
			Detail:     fmt.Sprintf("unknown tier %q; valid tiers: %s", truncate(body.Tier, maxTierLen), strings.Join(valid, ", ")),
			ValidTiers: valid})
		return
	}
	o.Tier = tier.Name
	req := CheckoutRequest{Subject: subject, Tier: body.Tier, Email: body.Email, IdempotencyKey: key}
	if h.cfg.Customer != nil {
		id, err := h.cfg.Customer(r.Context(), subject)
		switch {
		case err == nil:
			req.CustomerID = id
		case errors.Is(err, ErrNoCustomer):
		default:
			h.cfg.Logger.LogAttrs(r.Context(), slog.LevelError, "checkout: customer lookup failed",
				slog.String("subject", subject), slog.Any("error", err))
			writeProblem(w, apiProblem{Status: http.StatusServiceUnavailable,
				Detail: "the billing account could not be looked up; try again later"})
			return
		}
	}
	s, err := h.cfg.Sessions.CreateCheckoutSession(r.Context(), req)
	if err != nil {
		h.sessionError(w, r, "checkout", subject, err)
		return
	}
	writeJSON(w, http.StatusOK, s)
}

// servePortal serves [Handler.Portal].
func (h *Handler) servePortal(w http.ResponseWriter, r *http.Request) {
	h.observe(w, r, OpPortal, func(w http.ResponseWriter, r *http.Request, _ *Observation) { h.portal(w, r) })
}

func (h *Handler) portal(w http.ResponseWriter, r *http.Request) {
	subject, ok := h.preamble(w, r)
	if !ok {
		return
	}
	if h.cfg.Customer == nil {
		writeProblem(w, apiProblem{Status: http.StatusServiceUnavailable,
			Detail: "the billing portal is not configured (no customer lookup)"})
		return
	}
	key, ok := h.idempotencyKey(w, r, "portal", subject)
	if !ok {
		return
	}
	if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
		var body struct{}
		if !h.decode(w, r, &body, false) {
			return
		}
	}
	customer, err := h.cfg.Customer(r.Context(), subject)
	if errors.Is(err, ErrNoCustomer) || err == nil && customer == "" {
		writeProblem(w, apiProblem{Status: http.StatusConflict,
			Detail: "this account has no Stripe customer yet; subscribe through checkout first"})
		return
	}
	if err != nil {
		h.cfg.Logger.LogAttrs(r.Context(), slog.LevelError, "checkout: customer lookup failed",
			slog.String("subject", subject), slog.Any("error", err))
		writeProblem(w, apiProblem{Status: http.StatusServiceUnavailable,
			Detail: "the billing account could not be looked up; try again later"})
		return
	}
	s, err := h.cfg.Sessions.CreatePortalSession(r.Context(), PortalRequest{CustomerID: customer, IdempotencyKey: key})
	if err != nil {
		h.sessionError(w, r, "portal", subject, err)
		return
	}
	writeJSON(w, http.StatusOK, s)
}

// preamble answers 503 (not configured), 405 and 401, and returns the
// subject.
func (h *Handler) preamble(w http.ResponseWriter, r *http.Request) (string, bool) {
	if h.notConfigured != "" {
		writeProblem(w, apiProblem{Status: http.StatusServiceUnavailable, Detail: h.notConfigured})
		return "", false
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeProblem(w, apiProblem{Status: http.StatusMethodNotAllowed, Detail: "use POST"})
		return "", false
	}
	subject, err := h.cfg.Subject(r)
	if err != nil || subject == "" {
		writeProblem(w, apiProblem{Status: http.StatusUnauthorized, Detail: "authentication is required"})
		return "", false
	}
	if err := validSubject(subject); err != nil {
		h.cfg.Logger.LogAttrs(r.Context(), slog.LevelError, "checkout: SubjectFunc returned an invalid subject",
			slog.Any("error", err))
		writeProblem(w, apiProblem{Status: http.StatusInternalServerError, Detail: "the account cannot be billed"})
		return "", false
	}
	return subject, true
}

// idempotencyKey validates the Idempotency-Key header and returns the
// Stripe key derived from it, or "" (a new random key) when it is absent.
func (h *Handler) idempotencyKey(w http.ResponseWriter, r *http.Request, op, subject string) (string, bool) {
	vals := r.Header.Values(IdempotencyHeader)
	if len(vals) == 0 {
		return "", true
	}
	if len(vals) > 1 {
		writeProblem(w, apiProblem{Status: http.StatusBadRequest, Detail: "send one Idempotency-Key header"})
		return "", false
	}
	if err := validIdempotencyKey(vals[0]); err != nil {
		writeProblem(w, apiProblem{Status: http.StatusBadRequest, Detail: fmt.Sprintf(
			"Idempotency-Key must be 1 to %d printable ASCII characters without spaces", maxIdempotencyKeyLen)})
		return "", false
	}
	return scopedKey(op, subject, vals[0]), true
}

// decode reads a JSON object from r's body into v, answering 415, 413 and
// 400 itself. required says whether an empty body is an error.
func (h *Handler) decode(w http.ResponseWriter, r *http.Request, v any, required bool) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		writeProblem(w, apiProblem{Status: http.StatusUnsupportedMediaType, Detail: "send a JSON body with Content-Type: application/json"})
		return false
	}
	if r.ContentLength > h.cfg.MaxBodyBytes {
		writeProblem(w, tooLarge(h.cfg.MaxBodyBytes))
		return false
	}
	body := r.Body
	if body == nil { // a client request; a server's never has a nil Body
		body = http.NoBody
	}
	// The server's own ResponseWriter, so that a body over the limit makes
	// it close the connection (an observer's wrapper would hide that).
	dec := json.NewDecoder(http.MaxBytesReader(unwrap(w), body, h.cfg.MaxBodyBytes))
	dec.DisallowUnknownFields()
	err = dec.Decode(v)
	if err == nil {
		// Exactly one JSON value.
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("trailing data")
			var mbe *http.MaxBytesError
			if errors.As(terr, &mbe) {
				err = terr
			}
		}
	}
	var mbe *http.MaxBytesError
	switch {
	case err == nil:
		return true
	case errors.As(err, &mbe):
		writeProblem(w, tooLarge(h.cfg.MaxBodyBytes))
	case errors.Is(err, io.EOF) && required:
		writeProblem(w, apiProblem{Status: http.StatusBadRequest, Detail: "the request body is empty; send a JSON object"})
	case errors.Is(err, io.EOF):
		return true
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		writeProblem(w, apiProblem{Status: http.StatusBadRequest, Detail: "unknown field " +
			truncate(strings.TrimPrefix(err.Error(), "json: unknown field "), 80) + " (the subject comes from authentication, never from the body)"})
	default:
		writeProblem(w, apiProblem{Status: http.StatusBadRequest, Detail: "the request body is not a valid JSON object"})
	}
	return false
}

func tooLarge(limit int64) apiProblem {
	return apiProblem{Status: http.StatusRequestEntityTooLarge, Detail: fmt.Sprintf("the request body exceeds %d bytes", limit)}
}

// sessionError answers a failed session creation.
func (h *Handler) sessionError(w http.ResponseWriter, r *http.Request, op, subject string, err error) {
	var se *stripe.Error
	reqID := ""
	if errors.As(err, &se) {
		reqID = se.RequestID
	}
	switch {
	case errors.Is(err, ErrInvalidRequest):
		writeProblem(w, apiProblem{Status: http.StatusBadRequest, Detail: strings.TrimPrefix(err.Error(), ErrInvalidRequest.Error()+": ")})
		return
	case errors.Is(err, ErrUnknownTier):
		writeProblem(w, apiProblem{Status: http.StatusBadRequest, Detail: "unknown tier"})
		return
	case errors.Is(err, ErrNoCustomer):
		writeProblem(w, apiProblem{Status: http.StatusConflict, Detail: "this account has no Stripe customer yet; subscribe through checkout first"})
		return
	}
	h.cfg.Logger.LogAttrs(r.Context(), slog.LevelError, "checkout: Stripe call failed",
		slog.String("op", op), slog.String("subject", subject),
		slog.String("stripe_request_id", reqID), slog.Any("error", err))
	switch {
	case errors.Is(err, ErrTimeout):
		writeProblem(w, apiProblem{Status: http.StatusGatewayTimeout,
			Detail: "the payment provider did not answer in time; try again", StripeRequestID: reqID})
	case se != nil && se.Type == stripe.ErrorTypeIdempotency:
		writeProblem(w, apiProblem{Status: http.StatusConflict,
			Detail: "the Idempotency-Key was already used with a different request", StripeRequestID: reqID})
	default:
		writeProblem(w, apiProblem{Status: http.StatusBadGateway,
			Detail: "the payment provider could not create the session; try again later", StripeRequestID: reqID})
	}
}

// apiProblem is an RFC 9457 problem details body with checkout's members.
type apiProblem struct {
	Type            string   `json:"type"`
	Title           string   `json:"title"`
	Status          int      `json:"status"`
	Detail          string   `json:"detail,omitempty"`
	ValidTiers      []string `json:"valid_tiers,omitempty"`
	StripeRequestID string   `json:"stripe_request_id,omitempty"`
}

// writeProblem writes p, with "about:blank" and the status text for an
// empty Type and Title.
func writeProblem(w http.ResponseWriter, p apiProblem) {
	if p.Type == "" {
		p.Type = "about:blank"
	}
	if p.Title == "" {
		p.Title = http.StatusText(p.Status)
	}
	problem.Write(w, p.Status, p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
