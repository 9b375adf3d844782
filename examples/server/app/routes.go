package app

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
)

// routes returns the application's handler:
//
//	POST /billing/webhook    Stripe events (signed)
//	POST /billing/checkout   Checkout session for the caller (API key)
//	POST /billing/portal     billing-portal session for the caller (API key)
//	GET  /billing/usage      the caller's plan and usage (API key)
//	GET  /billing/success    where Checkout returns after payment
//	GET  /billing/cancel     where Checkout returns when abandoned
//	GET  /v1/hello           the demo API (API key, metered)
//	POST /v1/complete        the demo model (API key, metered: requests,
//	                         and tokens settled after the reply)
//	GET  /v1/export          the caller's usage as CSV (API key, feature
//	                         "export", metered)
//	GET  /healthz            Redis reachable
//
// and the extra routes of Config.Routes, neither authenticated nor
// metered. It returns an error if one of those is invalid or collides with
// a route above.
func (a *App) routes() (http.Handler, error) {
	auth := a.keys.authenticate
	mux := http.NewServeMux()
	// The webhook and checkout handlers answer other methods with 405
	// themselves.
	mux.Handle("/billing/webhook", a.webhooks)
	mux.Handle("/billing/checkout", auth(a.checkout.Checkout()))
	mux.Handle("/billing/portal", auth(a.checkout.Portal()))
	// GET routes: another method gets 405, as problem+json like every
	// other error (the mux's own 405 is text/plain).
	get := func(path string, h http.Handler) {
		mux.Handle("GET "+path, h)
		mux.Handle(path, methodNotAllowed("GET, HEAD"))
	}
	get("/billing/usage", auth(http.HandlerFunc(a.usage)))
	get("/billing/success", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"message": "Thank you! Your subscription starts as soon as Stripe confirms the payment."})
	}))
	get("/billing/cancel", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"message": "Checkout was canceled; nothing was charged."})
	}))
	// The demo API: authenticated, then metered. Each route is wrapped on
	// its own, so that a request for an unknown path is not counted.
	v1 := func(h http.HandlerFunc) http.Handler { return auth(a.meter.Handle(h)) }
	get("/v1/hello", v1(a.hello))
	// Completions: the body is validated first (a bad one is not
	// counted), then the request counted and its tokens reserved.
	mux.Handle("POST /v1/complete", auth(decodeCompletion(a.completions.Handle(http.HandlerFunc(a.complete)))))
	mux.Handle("/v1/complete", methodNotAllowed("POST"))
	// The export is a feature of the plan: a plan without it gets 403
	// (and no plan 402) before the request is counted.
	get("/v1/export", auth(a.lifecycle.RequireFeature(subjectOf, exportFeature)(a.meter.Handle(http.HandlerFunc(a.export)))))
	get("/healthz", http.HandlerFunc(a.healthz))
	// Any other path: 404 as problem+json (the mux's own is text/plain).
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusNotFound, "No such route.")
	})
	// The extra routes, in a fixed order so that an error is always the
	// same one.
	for _, pattern := range slices.Sorted(maps.Keys(a.cfg.Routes)) {
		if err := handle(mux, pattern, a.cfg.Routes[pattern]); err != nil {
			return nil, err
		}
	}
	return mux, nil
}

// handle registers h for pattern on mux, and returns as an error what the
// mux panics on: an invalid pattern, a nil handler, or a pattern that
// conflicts with one registered before.
func handle(mux *http.ServeMux, pattern string, h http.Handler) (err error) {
	defer func() {
		switch r := recover().(type) {
		case nil:
		case error:
			err = fmt.Errorf("Config.Routes[%q]: %w", pattern, r)
		default:
			err = fmt.Errorf("Config.Routes[%q]: %v", pattern, r)
		}
	}()
	mux.Handle(pattern, h)
	return nil
}

// methodNotAllowed answers 405 with the allowed methods.
func methodNotAllowed(allow string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeProblem(w, http.StatusMethodNotAllowed, "Use "+allow+".")
	})
}

// hello is the demo API that the subscription sells. The quota middleware
// in front of it has already counted the request.
func (a *App) hello(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"message": "hello, " + subjectFrom(r.Context())})
}

var errNoSubject = errors.New("no authenticated subject")

// subjectOf is the quota and checkout SubjectFunc: the subject that the
// API key authenticated, never a value the client chose.
func subjectOf(r *http.Request) (string, error) {
	if s := subjectFrom(r.Context()); s != "" {
		return s, nil
	}
	return "", errNoSubject
}
