package billing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/billkit/billkit/internal/problem"
	"github.com/billkit/billkit/quota"
)

// eventSummaryUpdated is Stripe's event of a customer's changed active
// features (Stripe Entitlements); stripe-go v76 has no constant for it.
const eventSummaryUpdated stripe.EventType = "entitlements.active_entitlement_summary.updated"

// problemFeature is the problem type of the 403 of [Lifecycle.RequireFeature].
const problemFeature = "https://pkg.go.dev/github.com/billkit/billkit/billing#Lifecycle.RequireFeature"

// HasFeature reports whether subject has feature: its plan lists it
// (Plan.Features of the plan its entitlement grants now: the tier's while
// active or trialing, the grace tier's while past_due within grace; a
// pending subject's provisional allowance has no features), or Stripe
// Entitlements lists it among the subject's customer's active features
// (Entitlement.StripeFeatures, trusted whatever the subscription's
// status). It answers from the limits cache ([Lifecycle.Limits]), so it
// costs no store read while the subject's entitlement is cached. A subject
// without an entitlement has no feature. Errors are the store's, wrapped,
// or [ErrInvalidSubject].
func (l *Lifecycle) HasFeature(ctx context.Context, subject, feature string) (bool, error) {
	has, _, err := l.limits.feature(ctx, subject, feature)
	return has, err
}

// feature reports whether subject has feature, and whether its
// entitlement grants anything (a plan or the provisional allowance).
func (l *LimitsCache) feature(ctx context.Context, subject, feature string) (has, granted bool, err error) {
	e, found, err := l.entitlement(ctx, subject)
	if err != nil || !found {
		return false, false, err
	}
	p, g := l.grantOf(e, l.cfg.Now())
	has = feature != "" && (slices.Contains(e.StripeFeatures, feature) || (g == grantPlan && slices.Contains(p.Features, feature)))
	return has, g != grantNone, nil
}

// featureProblem is the body of the gate's 402 and 403.
type featureProblem struct {
	problem.Details
	Feature string `json:"feature"`
}

// RequireFeature returns a middleware that passes a request to the next
// handler only when its subject has feature ([Lifecycle.HasFeature]).
// subject names the request's subject, as quota's SubjectFunc does (a
// [quota.SubjectFunc] fits). Other requests get an application/problem+json
// response without internal details:
//
//   - 401 (type quota.ProblemNoSubject): subject failed or returned "".
//   - 402 (type quota.ProblemNoPlan, member "feature"): the subject's
//     entitlement grants nothing (none, canceled, unpaid, past its grace,
//     ...), so subscribing is the way to the feature.
//   - 403 (member "feature"): the subject has a plan without the feature
//     (or is pending: the provisional allowance has no features).
//   - 500: the subject breaks billkit's subject rule (a bug of subject).
//   - 503 with Retry-After: 1: the entitlement could not be read within
//     quota.DefaultDeadline (100 ms).
//
// An empty feature is never granted. The middleware is safe for
// concurrent use.
func (l *Lifecycle) RequireFeature(subject func(*http.Request) (string, error), feature string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s, err := "", errors.New("no subject function")
			if subject != nil {
				s, err = subject(r)
			}
			if err != nil || s == "" {
				problem.Write(w, http.StatusUnauthorized, problem.Details{Type: quota.ProblemNoSubject,
					Title: "Unauthorized", Status: http.StatusUnauthorized, Detail: "The request does not identify an account."})
				return
			}
			ctx, cancel := context.WithTimeout(r.Context(), quota.DefaultDeadline)
			has, granted, err := l.limits.feature(ctx, s, feature)
			cancel()
			switch {
			case errors.Is(err, ErrInvalidSubject):
				l.cfg.Logger.ErrorContext(r.Context(), "billing: feature gate: invalid subject", slog.Any("error", err))
				problem.Write(w, http.StatusInternalServerError, problem.New(http.StatusInternalServerError,
					"The request's feature could not be checked."))
			case err != nil:
				l.cfg.Logger.WarnContext(r.Context(), "billing: feature gate: entitlement unavailable",
					slog.String("subject", s), slog.Any("error", err))
				w.Header().Set("Retry-After", strconv.Itoa(1))
				problem.Write(w, http.StatusServiceUnavailable, problem.New(http.StatusServiceUnavailable,
					"The account's plan could not be read. Try again shortly."))
			case has:
				next.ServeHTTP(w, r)
			case !granted:
				problem.Write(w, http.StatusPaymentRequired, featureProblem{Details: problem.Details{Type: quota.ProblemNoPlan,
					Title: "No active plan", Status: http.StatusPaymentRequired,
					Detail: "The account has no active plan. Subscribe to a plan that includes this feature."}, Feature: feature})
			default:
				problem.Write(w, http.StatusForbidden, featureProblem{Details: problem.Details{Type: problemFeature,
					Title: "Feature not in plan", Status: http.StatusForbidden,
					Detail: "The account's plan does not include this feature."}, Feature: feature})
			}
		})
	}
}

// onFeatures applies an entitlements.active_entitlement_summary.updated
// event: the customer's active features, as a fact of the subject the
// customer is linked to (parked until the link appears). A summary that
// lists only part of the entitlements (has_more), and every summary with
// Config.Refetch, is completed by listing the customer's active
// entitlements from Stripe; without Config.Stripe such an event is
// refused.
func (l *Lifecycle) onFeatures(ctx context.Context, log *slog.Logger, ev *stripe.Event, at time.Time, raw []byte) error {
	v, err := readEntitlementSummary(raw)
	if err != nil {
		return readFailed(ev, err)
	}
	if v.More || l.cfg.Refetch {
		if l.cfg.Stripe == nil {
			return unreadable(ev, "the summary of customer %s lists only part of the active entitlements (has_more): set Config.Stripe to list them", v.CustomerID)
		}
		fresh, listedAt, err := l.listFeatures(ctx, v.CustomerID)
		if err != nil {
			return err
		}
		v, at = fresh, maxTime(at, listedAt)
	}
	f := featuresFact{At: at, EventID: ev.ID, CustomerID: v.CustomerID, Features: v.Features}
	subject, err := l.subjectOf(ctx, nil, v.CustomerID)
	if err != nil {
		return err
	}
	if subject == "" {
		return l.park(ctx, log, ev, v.CustomerID, parkedFact{Features: &f})
	}
	return l.update(ctx, log, subject, func(e *Entitlement) { mergeFeatures(e, f) })
}

// listFeatures lists customer's active features from Stripe. Their time is
// when the listing began, less a second, as for [Lifecycle.fetch].
func (l *Lifecycle) listFeatures(ctx context.Context, customer string) (featuresView, time.Time, error) {
	start := l.cfg.Now().UTC().Truncate(time.Second).Add(-time.Second)
	p := &stripe.EntitlementsActiveEntitlementListParams{Customer: stripe.String(customer)}
	p.Context = ctx
	p.Limit = stripe.Int64(100)
	it := l.cfg.Stripe.EntitlementsActiveEntitlements.List(p)
	v := featuresView{CustomerID: customer}
	var page *stripe.EntitlementsActiveEntitlementList
	fromRaw := false
	for it.Next() {
		if pl := it.EntitlementsActiveEntitlementList(); pl != page {
			page, fromRaw = pl, false
			if pl != nil && pl.LastResponse != nil && len(pl.LastResponse.RawJSON) > 0 {
				pv, err := readActiveEntitlements(pl.LastResponse.RawJSON)
				if err != nil {
					return featuresView{}, time.Time{}, fmt.Errorf("billing: read active entitlements from Stripe: %w", err)
				}
				v.Features, fromRaw = append(v.Features, pv.Features...), true
			}
		}
		if fromRaw {
			continue
		}
		ae := it.EntitlementsActiveEntitlement()
		if ae == nil || ae.LookupKey == "" {
			return featuresView{}, time.Time{}, errors.New("billing: read active entitlements from Stripe: an entitlement without a lookup key")
		}
		v.Features = append(v.Features, ae.LookupKey)
	}
	if err := it.Err(); err != nil {
		return featuresView{}, time.Time{}, fmt.Errorf("billing: list active entitlements from Stripe: %w", err)
	}
	slices.Sort(v.Features)
	v.Features = slices.Compact(v.Features)
	return v, start, nil
}
