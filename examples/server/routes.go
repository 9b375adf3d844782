package main

import (
	"net/http"
)

// routes returns the application's handler:
//
//	POST /billing/webhook    Stripe events (signed)
//	POST /billing/checkout   Checkout session for the caller (API key)
//	POST /billing/portal     billing-portal session for the caller (API key)
//	GET  /billing/usage      the caller's plan and usage (API key)
//	GET  /v1/hello           the demo API (API key, metered)
//	GET  /healthz            Redis reachable
func (a *App) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", a.healthz)
	mux.Handle("/v1/", a.keys.authenticate(a.api()))
	return mux
}

// api is the demo API that the subscription sells.
func (a *App) api() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/hello", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"message": "hello, " + subjectFrom(r.Context())})
	})
	return mux
}
