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
	// "meter" (the exhausted meter), "violated-policies", "limit", "used",
	// "reserved" (units held by unsettled reservations; omitted when
	// zero) and "reset" (RFC 3339), all of the exhausted meter.
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
	Meter            string   `json:"meter"`
	ViolatedPolicies []string `json:"violated-policies"`
	Limit            int64    `json:"limit"`
	Used             int64    `json:"used"`
	Reserved         int64    `json:"reserved,omitempty"`
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
// application/problem+json body of type [ProblemQuotaExceeded] naming the
// exhausted meter ([Decision.Exhausted]) and giving its limit, count and
// reset time. The middleware has already set the RateLimit fields and
// Retry-After (seconds to the end of that meter's period).
func DefaultDeny(w http.ResponseWriter, r *http.Request, d Decision) {
	meter, limit, used, reserved, end := d.Meter, d.Limit, d.Used, d.Reserved, d.Period.End
	if rd, ok := d.reservation(d.Exhausted); ok {
		meter, limit, used, reserved, end = rd.Meter, rd.Limit, rd.Used, rd.Reserved, rd.Period.End
	}
	writeProblem(w, http.StatusPaymentRequired, ProblemQuotaExceeded, "", "", quotaProblem{
		Details: problem.Details{
			Type:   ProblemQuotaExceeded,
			Title:  "Quota exceeded",
			Status: http.StatusPaymentRequired,
			Detail: "The plan's quota of " + meter + " for the current period is used up.",
		},
		Meter:            meter,
		ViolatedPolicies: []string{policyName(&d, meter)},
		Limit:            limit,
		Used:             used,
		Reserved:         reserved,
		Reset:            end.UTC().Format(time.RFC3339),
	})
}

// policyName is the RateLimit policy identifier of meter: with one meter
// (no reservations), the plan, else the meter; with several, the meter.
func policyName(d *Decision, meter string) string {
	if d.Plan != "" && d.res == nil {
		return d.Plan
	}
	return meter
}

// setRateLimit sets the RateLimit-Policy and RateLimit fields
// (draft-ietf-httpapi-ratelimit-headers) for the capped meters of a
// decision, and Retry-After for a denied one. With one meter, the policy
// is named after the plan (or the meter):
//
//	RateLimit-Policy: "pro";q=1000;w=2592000
//	RateLimit: "pro";r=250;t=86400
//
// With reservations, each capped meter is a list member named after the
// meter, the request meter first:
//
//	RateLimit-Policy: "requests";q=1000;w=2592000, "tokens";q=50000;w=2592000
//	RateLimit: "requests";r=250;t=86400, "tokens";r=1200;t=86400
//
// The values' slices are backed by dc.hdr, one element each with no spare
// capacity, so that a later Header.Add reallocates rather than writes into
// dc. No slice is shared with another response: a handler may write to
// the values it finds in its header map (h[k][0] = ...), so the cached
// RateLimit-Policy is a string, copied into this response's own slot.
func (m *Middleware) setRateLimit(h http.Header, dc *decisionCtx, now time.Time) {
	d := &dc.d
	if !d.Allowed {
		end := d.Period.End
		if rd, ok := d.reservation(d.Exhausted); ok {
			end = rd.Period.End
		}
		dc.hdr[1] = itoa(max(ceilSeconds(end.Sub(now)), 1))
		h[headerRetry] = dc.hdr[1:2:2]
	}
	if d.res != nil {
		m.setRateLimits(h, dc, now)
		return
	}
	if d.Unlimited {
		return
	}
	name := policyName(d, d.Meter)
	dc.hdr[2] = m.policy(name, d.Limit, ceilSeconds(d.Period.End.Sub(d.Period.Start)))
	h[headerPolicy] = dc.hdr[2:3:3]
	var buf [80]byte
	b := appendSFString(buf[:0], name)
	b = append(b, ";r="...)
	b = strconv.AppendInt(b, d.Remaining, 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, ceilSeconds(d.Period.End.Sub(now)), 10)
	dc.hdr[0] = string(b)
	h[headerRateLimit] = dc.hdr[0:1:1]
}

// setRateLimits sets the fields of a decision with reservations: one list
// member per capped meter.
func (m *Middleware) setRateLimits(h http.Header, dc *decisionCtx, now time.Time) {
	d := &dc.d
	var pbuf, rbuf [256]byte
	pol, rl := pbuf[:0], rbuf[:0]
	add := func(meter string, limit, remaining int64, p Period) {
		if len(pol) > 0 {
			pol = append(pol, ", "...)
			rl = append(rl, ", "...)
		}
		pol = appendSFString(pol, meter)
		pol = append(pol, ";q="...)
		pol = strconv.AppendInt(pol, limit, 10)
		pol = append(pol, ";w="...)
		pol = strconv.AppendInt(pol, ceilSeconds(p.End.Sub(p.Start)), 10)
		rl = appendSFString(rl, meter)
		rl = append(rl, ";r="...)
		rl = strconv.AppendInt(rl, remaining, 10)
		rl = append(rl, ";t="...)
		rl = strconv.AppendInt(rl, ceilSeconds(p.End.Sub(now)), 10)
	}
	if !d.Unlimited {
		add(d.Meter, d.Limit, d.Remaining, d.Period)
	}
	for i := range *d.res {
		if rd := &(*d.res)[i]; !rd.Unlimited {
			add(rd.Meter, rd.Limit, rd.Remaining, rd.Period)
		}
	}
	if len(pol) == 0 {
		return
	}
	dc.hdr[2] = string(pol)
	h[headerPolicy] = dc.hdr[2:3:3]
	dc.hdr[0] = string(rl)
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
