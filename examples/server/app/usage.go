package app

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
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

	// Used, Limit, Remaining, Included and Reset are the requests
	// meter's, as in Meters.
	Used      int64     `json:"used"`
	Limit     *int64    `json:"limit"`
	Remaining *int64    `json:"remaining"`
	Included  int64     `json:"included"`
	Reset     time.Time `json:"reset"`

	// GraceUntil is when a past_due subscription's grace access ends.
	GraceUntil *time.Time `json:"grace_until,omitempty"`
	// Features are the features the caller has now (a plan's, or
	// Stripe Entitlements').
	Features []string `json:"features"`
	// Meters is the usage of every meter of the plan, requests first.
	Meters []meterUsage `json:"meters"`
}

// meterUsage is one meter's usage in its current period.
type meterUsage struct {
	Meter string `json:"meter"`
	// Used is the billable units counted this period: the requests
	// allowed, the tokens settled.
	Used int64 `json:"used"`
	// Reserved is the units held by requests still running (tokens of
	// completions not settled yet); never billed as such.
	Reserved int64 `json:"reserved"`
	// Included is the units the plan's price includes.
	Included int64 `json:"included"`
	// Limit is the hard limit; null when the plan has no cap.
	Limit *int64 `json:"limit"`
	// Remaining is Limit - Used - Reserved, at least 0: the units left
	// before requests are denied; null when the plan has no cap.
	Remaining *int64 `json:"remaining"`
	// Reset is when the period's count resets.
	Reset time.Time `json:"reset"`
}

// usage serves GET /billing/usage: the caller's plan, status, features
// and the usage of each of the plan's meters in the current period.
func (a *App) usage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	subject := subjectFrom(ctx)
	resp := usageResponse{Subject: subject, Status: "none", Features: []string{}}

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

	plan, meters, err := a.readUsage(ctx, subject)
	if err == nil {
		resp.Features, err = a.features(ctx, subject, plan, e.StripeFeatures)
	}
	if err != nil {
		a.log.ErrorContext(ctx, "usage: read usage", "subject", subject, "err", err)
		writeProblem(w, http.StatusServiceUnavailable, "The usage could not be read; try again.")
		return
	}
	resp.Plan = plan.Tier
	resp.Meters = meters
	for _, m := range meters {
		if m.Meter == quota.DefaultMeter {
			resp.Used, resp.Limit, resp.Remaining, resp.Included, resp.Reset = m.Used, m.Limit, m.Remaining, m.Included, m.Reset
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

// readUsage returns the plan that subject's entitlement grants now (its
// Tier is "" without access, and "provisional" for a pending subject's
// allowance, which is not in the catalog) and the usage of each of its
// meters in their current periods (billing.Plan.AllMeters), requests
// first: without a plan, requests only.
func (a *App) readUsage(ctx context.Context, subject string) (billing.Plan, []meterUsage, error) {
	limitsOf := func(meter string) (quota.Limits, error) {
		l, err := a.limits.Limits(ctx, subject, meter)
		if errors.Is(err, quota.ErrNoPlan) {
			return quota.Limits{}, nil // no access: nothing remains
		}
		if err != nil {
			return l, fmt.Errorf("limits of %s: %w", meter, err)
		}
		return l, nil
	}
	requests, err := limitsOf(quota.DefaultMeter)
	if err != nil {
		return billing.Plan{}, nil, err
	}
	names := []string{quota.DefaultMeter}
	plan, ok := a.plans.ByTier(requests.Plan)
	if ok {
		for _, m := range plan.AllMeters() {
			if m.Name != quota.DefaultMeter {
				names = append(names, m.Name)
			}
		}
	} else {
		plan = billing.Plan{Tier: requests.Plan}
	}
	now := a.now()
	meters := make([]meterUsage, 0, len(names))
	for _, name := range names {
		l := requests
		if name != quota.DefaultMeter {
			if l, err = limitsOf(name); err != nil {
				return plan, nil, err
			}
		}
		period := l.PeriodAt(now)
		u, err := a.counters.Usage(ctx, subject, name, period)
		if err != nil {
			return plan, nil, fmt.Errorf("counter of %s: %w", name, err)
		}
		m := meterUsage{Meter: name, Used: u.Used, Reserved: u.Reserved, Included: l.Included, Reset: period.End.UTC()}
		if !l.Unlimited() {
			limit := l.Limit()
			remaining := max(limit-u.Used-u.Reserved, 0)
			m.Limit, m.Remaining = &limit, &remaining
		}
		meters = append(meters, m)
	}
	return plan, meters, nil
}

// features returns the features subject has now, among plan's and
// Stripe's (the entitlement's), as billing's Lifecycle.HasFeature answers
// (which RequireFeature asks too).
func (a *App) features(ctx context.Context, subject string, plan billing.Plan, stripe []string) ([]string, error) {
	candidates := slices.Concat(plan.Features, stripe)
	slices.Sort(candidates)
	has := []string{}
	for _, f := range slices.Compact(candidates) {
		ok, err := a.lifecycle.HasFeature(ctx, subject, f)
		if err != nil {
			return nil, fmt.Errorf("feature %s: %w", f, err)
		}
		if ok {
			has = append(has, f)
		}
	}
	return has, nil
}

// export serves GET /v1/export, the demo's feature-gated route: the
// caller's usage of every meter in the current period, as CSV.
// RequireFeature has checked that the caller's plan has the export
// feature, and the quota middleware has counted the request.
func (a *App) export(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	subject := subjectFrom(ctx)
	plan, meters, err := a.readUsage(ctx, subject)
	if err != nil {
		a.log.ErrorContext(ctx, "export: read usage", "subject", subject, "err", err)
		writeProblem(w, http.StatusServiceUnavailable, "The usage could not be read; try again.")
		return
	}
	orNone := func(p *int64) string {
		if p == nil {
			return "none"
		}
		return strconv.FormatInt(*p, 10)
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="usage.csv"`)
	cw := csv.NewWriter(w)
	cw.Write([]string{"subject", "plan", "meter", "used", "reserved", "included", "limit", "remaining", "reset"})
	for _, m := range meters {
		cw.Write([]string{subject, plan.Tier, m.Meter, strconv.FormatInt(m.Used, 10), strconv.FormatInt(m.Reserved, 10),
			strconv.FormatInt(m.Included, 10), orNone(m.Limit), orNone(m.Remaining), m.Reset.Format(time.RFC3339)})
	}
	cw.Flush()
}
