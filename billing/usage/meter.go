package usage

import (
	"github.com/billkit/billkit/billing"
)

// meterFunc returns the meters to report for an entitlement, none when
// its tier bills no usage. It must be safe for concurrent use.
//
// The meters of e's Tier report every period. For e's PreviousPeriod the
// reporter calls it with Tier set to PreviousTier instead (the tier that
// period ended on, when it differs): that period is then reported with
// that tier's meters, and not at all when it returns none.
type meterFunc func(e billing.Entitlement) []meterSpec

// planMeters returns the [meterFunc] of a plan catalog: every meter of the
// plan of an entitlement's tier ([billing.Plan.AllMeters]) that has a
// MeterEventName (reported as meter events under that name) or a
// MeteredPriceID (reported as usage records to the subscription item of
// that price, from Entitlement.MeteredItems); when a meter has both, meter
// events win. Included is set to the meter's Included when it bills
// overage only (OverageOnly).
//
// An entitlement stored before billkit kept MeteredItems has only
// MeteredItemID, the item of the plan's first metered price: that meter
// reports to it.
func planMeters(plans *billing.Plans) meterFunc {
	return func(e billing.Entitlement) []meterSpec {
		p, ok := plans.ByTier(e.Tier)
		if !ok {
			return nil
		}
		var out []meterSpec
		first := true
		for _, m := range p.AllMeters() {
			primary := first && m.MeteredPriceID != ""
			if primary {
				first = false
			}
			if m.MeteredPriceID == "" && m.MeterEventName == "" {
				continue
			}
			s := meterSpec{Name: m.Name, EventName: m.MeterEventName}
			if s.EventName == "" {
				s.PriceID = m.MeteredPriceID
				s.ItemID = e.MeteredItems[m.MeteredPriceID]
				if s.ItemID == "" && primary && e.MeteredItems == nil {
					s.ItemID = e.MeteredItemID
				}
			}
			if m.OverageOnly {
				s.Included = m.Included
			}
			out = append(out, s)
		}
		return out
	}
}
