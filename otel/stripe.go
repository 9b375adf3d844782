package billkitotel

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/form"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// stripeInstruments are the Stripe client's instruments.
type stripeInstruments struct {
	tracer   trace.Tracer
	requests metric.Int64Counter
	duration metric.Float64Histogram
}

func (s *stripeInstruments) init(m metric.Meter, t trace.Tracer) error {
	set := instrumentSet{m: m}
	s.tracer = t
	s.requests = set.counter("billkit.stripe.requests", "{request}",
		"Stripe API requests, by method, route, response status and error type.")
	s.duration = set.histogram("billkit.stripe.request.duration",
		"Duration of a Stripe API request, stripe-go's network retries included.", callBuckets())
	return set.err()
}

// WrapBackend returns a stripe.Backend that records every call to b:
// billkit.stripe.requests and billkit.stripe.request.duration, and a span
// of kind client named "stripe METHOD ROUTE", such as
// "stripe POST /v1/subscriptions/{id}". Build the client with it:
//
//	api := client.New(key, &stripe.Backends{
//		API:     ins.WrapBackend(stripe.GetBackendWithConfig(stripe.APIBackend, cfg)),
//		Connect: ins.WrapBackend(stripe.GetBackendWithConfig(stripe.ConnectBackend, cfg)),
//		Uploads: ins.WrapBackend(stripe.GetBackendWithConfig(stripe.UploadsBackend, cfg)),
//	})
//
// The span's parent is the context of the call's params (Params.Context,
// which billkit's packages always set); a call without one starts a new
// trace. The wrapper does not modify the caller's params, so the context
// that reaches stripe-go's HTTP client is the caller's: an instrumented
// HTTP transport under stripe-go records its spans beside this one.
//
// The route is the request's path with every ID replaced by "{id}". A
// path segment is kept when it is a lowercase word of letters and
// underscores, like every resource and action name of Stripe's API
// (customers, meter_events, usage_records, billing_portal,
// subscription_items), or the version (v1); any other segment is an ID:
// Stripe's (sub_1Nxyz..., cus_ABC123..., si_..., cs_test_a1B2...), which
// hold digits or uppercase letters, and custom ones such as a coupon code
// with a digit, an uppercase letter or a hyphen. A custom ID of lowercase
// letters only (a coupon "summer") is kept as it is: name such objects
// with a digit or an uppercase letter where labels must stay bounded.
//
// Each call is labelled with http.request.method, url.template (the
// route), http.response.status_code (from Stripe's answer, when one came)
// and, when it failed, error.type: the status code as a string, "timeout"
// or "canceled" for a context that ended, else the error's Go type. Spans
// also carry Stripe's request ID (stripe.request_id); a failed call
// records its error and ends with status Error, 4xx answers included.
//
// WrapBackend(nil) returns nil. The wrapper is safe for concurrent use
// when b is.
func (ins *Instruments) WrapBackend(b stripe.Backend) stripe.Backend {
	if b == nil {
		return nil
	}
	return &backend{next: b, s: &ins.stripe}
}

// backend is a stripe.Backend that records the calls to next.
type backend struct {
	next stripe.Backend
	s    *stripeInstruments
}

var _ stripe.Backend = (*backend)(nil)

// Call records b.next.Call.
func (b *backend) Call(method, path, key string, params stripe.ParamsContainer, v stripe.LastResponseSetter) error {
	c := b.s.start(containerContext(params), method, path)
	err := b.next.Call(method, path, key, params, v)
	b.s.end(c, err, v)
	return err
}

// CallStreaming records b.next.CallStreaming.
func (b *backend) CallStreaming(method, path, key string, params stripe.ParamsContainer, v stripe.StreamingLastResponseSetter) error {
	c := b.s.start(containerContext(params), method, path)
	err := b.next.CallStreaming(method, path, key, params, v)
	b.s.end(c, err, v)
	return err
}

// CallRaw records b.next.CallRaw.
func (b *backend) CallRaw(method, path, key string, body *form.Values, params *stripe.Params, v stripe.LastResponseSetter) error {
	c := b.s.start(paramsContext(params), method, path)
	err := b.next.CallRaw(method, path, key, body, params, v)
	b.s.end(c, err, v)
	return err
}

// CallMultipart records b.next.CallMultipart.
func (b *backend) CallMultipart(method, path, key, boundary string, body *bytes.Buffer, params *stripe.Params, v stripe.LastResponseSetter) error {
	c := b.s.start(paramsContext(params), method, path)
	err := b.next.CallMultipart(method, path, key, boundary, body, params, v)
	b.s.end(c, err, v)
	return err
}

// SetMaxNetworkRetries sets the retries of b.next.
func (b *backend) SetMaxNetworkRetries(n int64) { b.next.SetMaxNetworkRetries(n) }

// containerContext returns the context of params, or
// context.Background() when it has none. A nil pointer in the interface
// (as stripe-go accepts) has none.
func containerContext(params stripe.ParamsContainer) context.Context {
	if params == nil {
		return context.Background()
	}
	if rv := reflect.ValueOf(params); rv.Kind() == reflect.Pointer && rv.IsNil() {
		return context.Background()
	}
	return paramsContext(params.GetParams())
}

// paramsContext returns p.Context, or context.Background() when it is nil.
func paramsContext(p *stripe.Params) context.Context {
	if p == nil || p.Context == nil {
		return context.Background()
	}
	return p.Context
}

// stripeCall is one call in progress.
type stripeCall struct {
	ctx   context.Context
	span  trace.Span
	kvs   []attribute.KeyValue // method and route
	start time.Time
}

func (s *stripeInstruments) start(ctx context.Context, method, path string) stripeCall {
	r := route(path)
	kvs := make([]attribute.KeyValue, 2, 4)
	kvs[0], kvs[1] = semconv.HTTPRequestMethodKey.String(method), semconv.URLTemplate(r)
	ctx, span := s.tracer.Start(ctx, "stripe "+method+" "+r,
		trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(kvs...))
	return stripeCall{ctx: ctx, span: span, kvs: kvs, start: time.Now()}
}

func (s *stripeInstruments) end(c stripeCall, err error, v any) {
	took := time.Since(c.start)
	var status int
	var requestID, errType string
	if err == nil {
		status, requestID = lastResponse(v)
	} else {
		var se *stripe.Error
		if errors.As(err, &se) {
			status, requestID = se.HTTPStatusCode, se.RequestID
		}
		errType = errorType(err, status)
	}
	kvs := c.kvs
	if status > 0 {
		kvs = append(kvs, semconv.HTTPResponseStatusCode(status))
	}
	if errType != "" {
		kvs = append(kvs, semconv.ErrorTypeKey.String(errType))
	}
	opt := metric.WithAttributes(kvs...)
	s.requests.Add(c.ctx, 1, opt)
	s.duration.Record(c.ctx, took.Seconds(), opt)

	if c.span.IsRecording() {
		c.span.SetAttributes(kvs[2:]...)
		if requestID != "" {
			c.span.SetAttributes(KeyRequestID.String(requestID))
		}
		if err != nil {
			c.span.RecordError(err)
			c.span.SetStatus(codes.Error, errType)
		}
	}
	c.span.End()
}

// errorType is the error.type of a failed call that got status (0 when no
// answer came).
func errorType(err error, status int) string {
	var se *stripe.Error
	switch {
	case status > 0:
		return strconv.Itoa(status)
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.As(err, &se) && se.Type != "":
		return string(se.Type)
	}
	return semconv.ErrorType(err).Value.AsString()
}

// lastResponse returns the status code and request ID of the response
// stripe-go stored in v, a resource embedding stripe.APIResource (or
// stripe.APIStream), or zeros when v holds none.
func lastResponse(v any) (status int, requestID string) {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct {
		return 0, ""
	}
	f := rv.Elem().FieldByName("LastResponse")
	if !f.IsValid() || f.Kind() != reflect.Pointer || f.IsNil() || !f.CanInterface() {
		return 0, ""
	}
	switch r := f.Interface().(type) {
	case *stripe.APIResponse:
		return r.StatusCode, r.RequestID
	case *stripe.StreamingAPIResponse:
		return r.StatusCode, r.RequestID
	}
	return 0, ""
}

// route returns path without its query, each ID segment replaced by
// "{id}" (see [Instruments.WrapBackend]).
func route(path string) string {
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	segs := strings.Split(path, "/")
	for i, seg := range segs {
		if isID(seg) {
			segs[i] = "{id}"
		}
	}
	return strings.Join(segs, "/")
}

// isID reports whether a path segment is an ID: not empty, not a version
// (v1, v2) and not a lowercase word of letters and underscores.
func isID(seg string) bool {
	if seg == "" || isVersion(seg) {
		return false
	}
	for i := 0; i < len(seg); i++ {
		if c := seg[i]; c != '_' && (c < 'a' || c > 'z') {
			return true
		}
	}
	return false
}

// isVersion reports whether seg is "v" followed by digits.
func isVersion(seg string) bool {
	if len(seg) < 2 || seg[0] != 'v' {
		return false
	}
	for i := 1; i < len(seg); i++ {
		if seg[i] < '0' || seg[i] > '9' {
			return false
		}
	}
	return true
}
