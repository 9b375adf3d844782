package main

import (
	"errors"
	"net/http"
	"time"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/quota"
)

// usageResponse is the body of GET /billing/usage.
type usageResponse struct {
	Subject string `json:"subject"`
	// Plan is the tier whose limits apply now; empty without access.
	Plan string `json:"plan"`
	// Status is the subscription's status ("none" without one).
	Status string `json:"status"`
	// Used is the units counted in the current period.
	Used int64 `json:"used"`
	// Limit is the hard limit; null when the plan has no cap.
	Limit *int64 `json:"limit"`
	// Remaining is the units left before requests are denied; null when
	// the plan has no cap.
	Remaining *int64 `json:"remaining"`
	// Included is the units the plan's price includes.
	Included int64 `json:"included"`
	// Reset is when the period's count resets.
	Reset time.Time `json:"reset"`
	// GraceUntil is when a past_due subscription's grace access ends.
	GraceUntil *time.Time `json:"grace_until,omitempty"`
}

// usage serves GET /billing/usage: the caller's plan, status and usage in
// the current period.
func (a *App) usage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	subject := subjectFrom(ctx)
	resp := usageResponse{Subject: subject, Status: "none"}

	e, err := a.entitlements.Get(ctx, subject)
	switch {
	case errors.Is(err, billing.ErrNotFound):
	case err != nil:
		a.log.ErrorContext(ctx, "usage: read entitlement", "subject", subject, "err", err)
		writeProblem(w, http.StatusServiceUnavailable, "The usage could not be read; try again.")
		return
	default:
		resp.Status = string(e.Status)
		if !e.GraceUntil.IsZero() {
			g := e.GraceUntil.UTC()
			resp.GraceUntil = &g
		}
	}

	limits, err := a.limits.Limits(ctx, subject, quota.DefaultMeter)
	switch {
	case errors.Is(err, quota.ErrNoPlan):
		limits = quota.Limits{} // no access: nothing remains
	case err != nil:
		a.log.ErrorContext(ctx, "usage: read limits", "subject", subject, "err", err)
		writeProblem(w, http.StatusServiceUnavailable, "The usage could not be read; try again.")
		return
	}
	period := limits.PeriodAt(a.now())
	u, err := a.counters.Usage(ctx, subject, quota.DefaultMeter, period)
	if err != nil {
		a.log.ErrorContext(ctx, "usage: read counter", "subject", subject, "err", err)
		writeProblem(w, http.StatusServiceUnavailable, "The usage could not be read; try again.")
		return
	}
	resp.Plan = limits.Plan
	resp.Used = u.Used
	resp.Included = limits.Included
	resp.Reset = period.End.UTC()
	if !limits.Unlimited() {
		limit := limits.Limit()
		remaining := max(limit-u.Used, 0)
		resp.Limit, resp.Remaining = &limit, &remaining
	}
	writeJSON(w, http.StatusOK, resp)
}
