package usage

import (
	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/quota"
)

// meterFunc returns the meter to report for an entitlement, or false when
// the entitlement has nothing to report (for example a plan without a
// metered price). It must be safe for concurrent use.
//
// The meter of e's Tier reports every period. For e's PreviousPeriod the
// reporter also calls it with Tier set to PreviousTier (the tier that
// period ended on, when it differs): that period is then reported with
// that meter's Included units, and not at all when it returns false.
type meterFunc func(e billing.Entitlement) (meterSpec, bool)

// planMeters returns the [meterFunc] of a plan catalog: an entitlement's
// tier reports quota meter (quota.DefaultMeter when empty) when its plan
// has a MeterEventName (reported as meter events under that name) or a
// MeteredPriceID (reported as usage records to the subscription item of
// that price); when a plan has both, meter events win. Included is set to
// the plan's Included when the plan bills overage only (Plan.OverageOnly).
func planMeters(plans *billing.Plans, meter string) meterFunc {
	if meter == "" {
		meter = quota.DefaultMeter
	}
	return func(e billing.Entitlement) (meterSpec, bool) {
		if plans == nil {
			return meterSpec{}, false
		}
		p, ok := plans.ByTier(e.Tier)
		if !ok || (p.MeteredPriceID == "" && p.MeterEventName == "") {
			return meterSpec{}, false
		}
		um := meterSpec{Name: meter, EventName: p.MeterEventName}
		if um.EventName == "" {
			um.PriceID = p.MeteredPriceID
		}
		if p.OverageOnly {
			um.Included = p.Included
		}
		return um, true
	}
}
