package main

import (
	"context"
	"errors"
	"time"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/quota"
)

// entitlementLimits is a quota.LimitsSource reading entitlements directly.
type entitlementLimits struct {
	store billing.EntitlementStore
	plans *billing.Plans
	now   func() time.Time
}

func newEntitlementLimits(store billing.EntitlementStore, plans *billing.Plans, now func() time.Time) *entitlementLimits {
	return &entitlementLimits{store: store, plans: plans, now: now}
}

func (l *entitlementLimits) Limits(ctx context.Context, subject string) (quota.Limits, error) {
	e, err := l.store.Get(ctx, subject)
	if errors.Is(err, billing.ErrNotFound) {
		return quota.Limits{}, quota.ErrNoPlan
	}
	if err != nil {
		return quota.Limits{}, err
	}
	tier := e.Tier
	switch e.Status {
	case billing.StatusActive, billing.StatusTrialing:
	case billing.StatusPastDue:
		if e.GraceTier == "" || !l.now().Before(e.GraceUntil) {
			return quota.Limits{}, quota.ErrNoPlan
		}
		tier = e.GraceTier
	default:
		return quota.Limits{}, quota.ErrNoPlan
	}
	p, ok := l.plans.ByTier(tier)
	if !ok {
		return quota.Limits{}, quota.ErrNoPlan
	}
	return p.Limits(e.Period), nil
}
