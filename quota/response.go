package quota

import (
	"net/http"
	"strconv"
	"time"

	"github.com/billkit/billkit/internal/problem"
)

// Problem types (RFC 9457) of the middleware's responses. Responses whose
// meaning is the HTTP status alone (401, 500, 503) use "about:blank".
const (
	// ProblemQuotaExceeded is the type of a 402 over the hard limit, as
	// defined by the IETF RateLimit header fields draft. Its body also has
	// "violated-policies", "limit", "used" and "reset" (RFC 3339).
	ProblemQuotaExceeded = "https://iana.org/assignments/http-problem-types#quota-exceeded"
	// ProblemNoPlan is the type of a 402 for a subject without an active
	// plan: the caller is authenticated (so not 401) and may gain access by
	// subscribing (so 402 Payment Required, not a permanent 403), and the
	// distinct type tells this apart from an exhausted quota.
	ProblemNoPlan = "https://pkg.go.dev/github.com/billkit/billkit/quota#ProblemNoPlan"
	// ProblemNoSubject is the type of a 401 for a request without subject.
	ProblemNoSubject = "about:blank"
	// ProblemUnavailable is the type of a 503 when no decision could be made.
	ProblemUnavailable = "about:blank"
)

// Response header fields set by the middleware (canonical form).
const (
	headerPolicy    = "Ratelimit-Policy"
	headerRateLimit = "Ratelimit"
	headerSoftLimit = "Quota-Soft-Limit"
	headerRetry     = "Retry-After"
)

// quotaProblem is the body of a 402 over the hard limit.
type quotaProblem struct {
	problem.Details
	ViolatedPolicies []string `json:"violated-policies"`
	Limit            int64    `json:"limit"`
	Used             int64    `json:"used"`
	Reset            string   `json:"reset"`
}

// writeProblem writes an application/problem+json response. body, when not
// nil, replaces the plain problem.
func writeProblem(w http.ResponseWriter, status int, typ, title, detail string, body any) {
	if body == nil {
		body = problem.Details{Type: typ, Title: title, Status: status, Detail: detail}
	}
	problem.Write(w, status, body)
}

func writeServerError(w http.ResponseWriter) {
	writeProblem(w, http.StatusInternalServerError, "about:blank", "Internal Server Error",
		"The request could not be metered.", nil)
}

// DefaultDeny is the default [DenyFunc]: 402 Payment Required with an
// application/problem+json body of type [ProblemQuotaExceeded] giving the
// limit, the count and the reset time. The middleware has already set the
// RateLimit fields and Retry-After (seconds to the period's end).
func DefaultDeny(w http.ResponseWriter, r *http.Request, d Decision) {
	writeProblem(w, http.StatusPaymentRequired, ProblemQuotaExceeded, "", "", quotaProblem{
		Details: problem.Details{
			Type:   ProblemQuotaExceeded,
			Title:  "Quota exceeded",
			Status: http.StatusPaymentRequired,
			Detail: "The plan's quota for the current period is used up.",
		},
		ViolatedPolicies: []string{policyName(&d)},
		Limit:            d.Limit,
		Used:             d.Used,
		Reset:            d.Period.End.UTC().Format(time.RFC3339),
	})
}

// policyName is the RateLimit policy identifier: the plan, else the meter.
func policyName(d *Decision) string {
	if d.Plan != "" {
		return d.Plan
	}
	return d.Meter
}

// setRateLimit sets the RateLimit-Policy and RateLimit fields
// (draft-ietf-httpapi-ratelimit-headers) for a capped decision, and
// Retry-After for a denied one.
//
//	RateLimit-Policy: "pro";q=1000;w=2592000
//	RateLimit: "pro";r=250;t=86400
//
// The values' slices are backed by dc.hdr, one element each with no spare
// capacity, so that a later Header.Add reallocates rather than writes into
// dc. No slice is shared with another response: a handler may write to
// the values it finds in its header map (h[k][0] = ...), so the cached
// RateLimit-Policy is a string, copied into this response's own slot.
func (m *Middleware) setRateLimit(h http.Header, dc *decisionCtx, now time.Time) {
	d := &dc.d
	reset := ceilSeconds(d.Period.End.Sub(now))
	if !d.Allowed {
		dc.hdr[1] = itoa(max(reset, 1))
		h[headerRetry] = dc.hdr[1:2:2]
	}
	if d.Unlimited {
		return
	}
	name := policyName(d)
	dc.hdr[2] = m.policy(name, d.Limit, ceilSeconds(d.Period.End.Sub(d.Period.Start)))
	h[headerPolicy] = dc.hdr[2:3:3]
	var buf [80]byte
	b := appendSFString(buf[:0], name)
	b = append(b, ";r="...)
	b = strconv.AppendInt(b, d.Remaining, 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, reset, 10)
	dc.hdr[0] = string(b)
	h[headerRateLimit] = dc.hdr[0:1:1]
}

// policy returns the RateLimit-Policy value, cached: strings are
// immutable, so every response may share one.
func (m *Middleware) policy(name string, quota, window int64) string {
	k := policyKey{name, quota, window}
	m.mu.RLock()
	v, ok := m.policies[k]
	m.mu.RUnlock()
	if ok {
		return v
	}
	b := appendSFString(nil, name)
	b = append(b, ";q="...)
	b = strconv.AppendInt(b, quota, 10)
	b = append(b, ";w="...)
	b = strconv.AppendInt(b, window, 10)
	v = string(b)
	m.mu.Lock()
	if len(m.policies) >= maxPolicies {
		clear(m.policies)
	}
	m.policies[k] = v
	m.mu.Unlock()
	return v
}

// appendSFString appends s as a Structured Field String (RFC 9651): quoted,
// with '"' and '\' escaped; bytes outside printable ASCII become '?'.
func appendSFString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c > 0x7e:
			b = append(b, '?')
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// ceilSeconds returns d in whole seconds, rounded up, and 0 for d <= 0.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
