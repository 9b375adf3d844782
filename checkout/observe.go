package checkout

import (
	"context"
	"net/http"
	"time"
)

// Observer receives the outcome of every request to [Handler]'s endpoints,
// for metrics and traces (the module github.com/billkit/billkit/otel turns
// it into OpenTelemetry instruments). Served is optional: nil is not
// called. It runs synchronously on the request's goroutine, after the
// response is written, so it must be quick, and it must be safe for
// concurrent use.
//
// An observation carries no subject, customer or email: its fields can
// label metrics.
type Observer struct {
	// Served is called once for every request to [Handler.Checkout] or
	// [Handler.Portal] (also through [Handler.ServeHTTP]), with its
	// outcome.
	Served func(ctx context.Context, o Observation)
}

// Endpoints of [Observation].
const (
	OpCheckout = "checkout"
	OpPortal   = "portal"
)

// Observation is the outcome of one request to an endpoint of [Handler].
type Observation struct {
	// Op is OpCheckout or OpPortal.
	Op string
	// Tier is the catalog's name of the tier a checkout asked for, once
	// the catalog knew it; empty otherwise (a portal session, an unknown
	// tier, a request refused before its body was read).
	Tier string
	// Status is the response's status code: 200 for a session created;
	// 502 and 504 when Stripe failed or did not answer in time, 503 when
	// the customer lookup failed; 4xx for a request refused (see
	// [Handler.Checkout] and [Handler.Portal]).
	Status int
	// Duration is the time from the request's arrival to its response.
	Duration time.Duration
}

// observe runs serve, and passes its outcome to Observer.Served when it is
// set.
func (h *Handler) observe(w http.ResponseWriter, r *http.Request, op string, serve func(http.ResponseWriter, *http.Request, *Observation)) {
	f := h.cfg.Observer.Served
	if f == nil {
		var o Observation
		serve(w, r, &o)
		return
	}
	o := Observation{Op: op}
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	serve(sw, r, &o)
	o.Status, o.Duration = sw.status, time.Since(start)
	if o.Status == 0 {
		o.Status = http.StatusOK // nothing written: net/http answers 200
	}
	f(r.Context(), o)
}

// statusWriter records the status code written through it.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap returns the wrapped ResponseWriter, for http.ResponseController.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// unwrap returns the ResponseWriter under an observer's statusWriter, or w.
func unwrap(w http.ResponseWriter) http.ResponseWriter {
	if sw, ok := w.(*statusWriter); ok {
		return sw.ResponseWriter
	}
	return w
}
