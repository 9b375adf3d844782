// Package fakestripe is a recording fake of the two Stripe endpoints the
// usage reporter calls, with Stripe's semantics: a usage record with
// action=set overwrites the quantity at its timestamp (increment adds), a
// meter event whose identifier Stripe already holds is refused with
// Stripe's duplicate answer, and a request that reuses an Idempotency-Key
// with the same parameters gets the first response again. Faults can be
// injected before or after a request is applied, including a response
// lost after Stripe applied the request.
//
// It is for billkit's tests only.
package fakestripe

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Fault is what happens to one request.
type Fault int

const (
	// None serves the request normally.
	None Fault = iota
	// FailBefore answers 503 without applying the request.
	FailBefore
	// LoseResponse applies the request and then drops the connection, so
	// the client never learns that Stripe applied it.
	LoseResponse
	// FailAfter applies the request and then answers 500.
	FailAfter
	// Hang answers nothing until the client gives up.
	Hang
	// RateLimited answers 429 (Stripe's rate_limit error) without
	// applying the request.
	RateLimited
)

// Request describes a request, for a fault function.
type Request struct {
	Path string
	Form url.Values
}

type cached struct {
	params string
	status int
	body   []byte
}

// Event is a meter event Stripe holds.
type Event struct {
	Identifier string
	EventName  string
	Customer   string
	Value      int64
	Timestamp  int64
}

// Server is the fake. Its methods are safe for concurrent use.
type Server struct {
	*httptest.Server

	// IdempotencyKeys makes the fake replay responses of reused
	// Idempotency-Keys, as Stripe does. NewServer sets it.
	IdempotencyKeys bool

	mu     sync.Mutex
	fault  func(Request) Fault
	usage  map[string]map[int64]int64 // item → timestamp → quantity
	events map[string]Event           // identifier → event
	idem   map[string]cached
	calls  map[string]int // path kind → count
}

// NewServer starts a fake; it is closed by Close.
func NewServer() *Server {
	s := &Server{
		IdempotencyKeys: true,
		usage:           make(map[string]map[int64]int64),
		events:          make(map[string]Event),
		idem:            make(map[string]cached),
		calls:           make(map[string]int),
	}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// SetFault installs fn, called for every request (nil: no faults).
func (s *Server) SetFault(fn func(Request) Fault) {
	s.mu.Lock()
	s.fault = fn
	s.mu.Unlock()
}

// Calls returns the number of requests received for kind ("usage_records"
// or "meter_events"), or for all kinds when kind is "".
func (s *Server) Calls(kind string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if kind != "" {
		return s.calls[kind]
	}
	n := 0
	for _, c := range s.calls {
		n += c
	}
	return n
}

// UsageTotal returns the quantity the subscription item holds: the sum of
// its records over all timestamps.
func (s *Server) UsageTotal(item string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, q := range s.usage[item] {
		n += q
	}
	return n
}

// UsageTimestamps returns the timestamps at which item holds records.
func (s *Server) UsageTimestamps(item string) []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ts []int64
	for t := range s.usage[item] {
		ts = append(ts, t)
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
	return ts
}

// MeterTotal returns the sum of the values of customer's events named
// eventName.
func (s *Server) MeterTotal(customer, eventName string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, e := range s.events {
		if e.Customer == customer && e.EventName == eventName {
			n += e.Value
		}
	}
	return n
}

// Events returns every meter event held, in no particular order.
func (s *Server) Events() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Event, 0, len(s.events))
	for _, e := range s.events {
		out = append(out, e)
	}
	return out
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Request-Id", "req_fake")
	w.WriteHeader(status)
	w.Write(body)
}

func errorBody(typ, code, msg string) []byte {
	e := map[string]string{"type": typ, "message": msg}
	if code != "" {
		e["code"] = code
	}
	b, _ := json.Marshal(map[string]any{"error": e})
	return b
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeJSON(w, 404, errorBody("invalid_request_error", "", "Unrecognized request URL"))
		return
	}
	if err := r.ParseForm(); err != nil {
		writeJSON(w, 400, errorBody("invalid_request_error", "", "bad form"))
		return
	}
	kind := ""
	switch {
	case r.URL.Path == "/v1/billing/meter_events":
		kind = "meter_events"
	case strings.HasPrefix(r.URL.Path, "/v1/subscription_items/") && strings.HasSuffix(r.URL.Path, "/usage_records"):
		kind = "usage_records"
	default:
		writeJSON(w, 404, errorBody("invalid_request_error", "", "Unrecognized request URL ("+r.URL.Path+")"))
		return
	}

	s.mu.Lock()
	s.calls[kind]++
	fault := None
	if s.fault != nil {
		fault = s.fault(Request{Path: r.URL.Path, Form: r.PostForm})
	}
	if fault == Hang {
		s.mu.Unlock()
		<-r.Context().Done()
		return
	}
	if fault == RateLimited {
		s.mu.Unlock()
		writeJSON(w, 429, errorBody("invalid_request_error", "rate_limit", "Too many requests hit the API too quickly."))
		return
	}
	if fault == FailBefore {
		s.mu.Unlock()
		writeJSON(w, 503, errorBody("api_error", "", "injected failure before applying"))
		return
	}
	status, body, replay := s.applyLocked(kind, r)
	s.mu.Unlock()
	if replay {
		// As Stripe marks the stored response of an earlier request with
		// the same Idempotency-Key.
		w.Header().Set("Idempotent-Replayed", "true")
	}

	switch fault {
	case LoseResponse:
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
				return
			}
		}
		writeJSON(w, 500, errorBody("api_error", "", "injected lost response"))
	case FailAfter:
		writeJSON(w, 500, errorBody("api_error", "", "injected failure after applying"))
	default:
		writeJSON(w, status, body)
	}
}

// applyLocked applies a request, with idempotency-key replay (replay
// reports one); s.mu is held.
func (s *Server) applyLocked(kind string, r *http.Request) (status int, body []byte, replay bool) {
	key := r.Header.Get("Idempotency-Key")
	params := kind + "?" + r.URL.Path + "?" + r.PostForm.Encode()
	if s.IdempotencyKeys && key != "" {
		if c, ok := s.idem[key]; ok {
			if c.params != params {
				return 400, errorBody("idempotency_error", "",
					"Keys for idempotent requests can only be used with the same parameters they were first used with."), false
			}
			return c.status, c.body, true
		}
	}
	if kind == "meter_events" {
		status, body = s.meterEventLocked(r.PostForm)
	} else {
		status, body = s.usageRecordLocked(r.URL.Path, r.PostForm)
	}
	if s.IdempotencyKeys && key != "" && status < 500 {
		s.idem[key] = cached{params: params, status: status, body: body}
	}
	return status, body, false
}

func (s *Server) meterEventLocked(f url.Values) (int, []byte) {
	name := f.Get("event_name")
	id := f.Get("identifier")
	cus := f.Get("payload[stripe_customer_id]")
	val, err := strconv.ParseInt(f.Get("payload[value]"), 10, 64)
	ts, terr := strconv.ParseInt(f.Get("timestamp"), 10, 64)
	switch {
	case name == "":
		return 400, errorBody("invalid_request_error", "parameter_missing", "Missing required param: event_name.")
	case cus == "":
		return 400, errorBody("invalid_request_error", "", "Missing payload key stripe_customer_id.")
	case err != nil || val <= 0:
		return 400, errorBody("invalid_request_error", "", "Invalid payload value.")
	case terr != nil:
		return 400, errorBody("invalid_request_error", "", "Invalid timestamp.")
	}
	if id == "" {
		h := sha256.Sum256([]byte(fmt.Sprint(time.Now().UnixNano(), len(s.events))))
		id = hex.EncodeToString(h[:8])
	}
	if _, dup := s.events[id]; dup {
		return 400, errorBody("invalid_request_error", "", "An event already exists with identifier "+id+".")
	}
	s.events[id] = Event{Identifier: id, EventName: name, Customer: cus, Value: val, Timestamp: ts}
	b, _ := json.Marshal(map[string]any{
		"object": "billing.meter_event", "created": ts, "event_name": name, "identifier": id,
		"livemode": false, "timestamp": ts,
		"payload": map[string]string{"stripe_customer_id": cus, "value": strconv.FormatInt(val, 10)},
	})
	return 200, b
}

func (s *Server) usageRecordLocked(path string, f url.Values) (int, []byte) {
	item := strings.TrimSuffix(strings.TrimPrefix(path, "/v1/subscription_items/"), "/usage_records")
	q, err := strconv.ParseInt(f.Get("quantity"), 10, 64)
	if err != nil || q < 0 {
		return 400, errorBody("invalid_request_error", "parameter_invalid_integer", "Invalid quantity.")
	}
	ts, err := strconv.ParseInt(f.Get("timestamp"), 10, 64)
	if err != nil {
		return 400, errorBody("invalid_request_error", "", "Invalid timestamp.")
	}
	m := s.usage[item]
	if m == nil {
		m = make(map[int64]int64)
		s.usage[item] = m
	}
	switch f.Get("action") {
	case "set":
		m[ts] = q
	case "", "increment":
		m[ts] += q
	default:
		return 400, errorBody("invalid_request_error", "", "Invalid action.")
	}
	b, _ := json.Marshal(map[string]any{
		"id": "mbur_fake", "object": "usage_record", "livemode": false,
		"quantity": q, "subscription_item": item, "timestamp": ts,
	})
	return 200, b
}
