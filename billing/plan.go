package billing

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/billkit/billkit/checkout"
	"github.com/billkit/billkit/quota"
)

// Plan is one pricing tier: the Stripe price a subscription to it carries,
// what it allows per billing period of each of its meters, and its
// features.
//
// A plan with one meter, the quota middleware's default "requests"
// ([quota.DefaultMeter]), sets its limits in the plan's own fields
// (Included, Soft, Hard, Overage, OverageOnly, MeteredPriceID,
// MeterEventName) and leaves Meters empty. A plan with several meters
// (requests and tokens, say) lists every one of them in Meters and leaves
// those fields zero.
type Plan struct {
	// Tier names the plan, for example "pro". Required: lower-case letters,
	// digits, '-' and '_'.
	Tier string `json:"tier"`
	// PriceID is the Stripe recurring price of the tier, the same price the
	// checkout catalog sells (environment PRICE_<TIER>). Required.
	PriceID string `json:"price_id"`
	// Included is the number of units the price includes per period.
	Included int64 `json:"included"`
	// Soft is a warning threshold (see [quota.Limits]). Zero means none.
	Soft int64 `json:"soft,omitempty"`
	// Hard is the number of units after which requests are denied. Zero
	// means Included without overage, and no cap with overage. Without
	// overage quota caps usage at Included whatever Hard says, so a plan
	// must include some units or allow overage: one whose effective limit
	// is 0 would deny every request and is rejected (naming Included).
	// To deny a past_due subject at once, use the [Suspend] grace policy
	// rather than a tier that allows nothing.
	Hard int64 `json:"hard,omitempty"`
	// Overage allows usage above Included, billed under MeteredPriceID or
	// MeterEventName (one of which is then required).
	Overage bool `json:"overage,omitempty"`
	// MeteredPriceID is the Stripe metered price whose subscription item
	// usage records are reported to. Optional.
	MeteredPriceID string `json:"metered_price_id,omitempty"`
	// MeterEventName is the Stripe billing meter's event name that usage is
	// reported under as meter events. Optional.
	MeterEventName string `json:"meter_event_name,omitempty"`
	// OverageOnly makes the usage reporter bill only the units above
	// Included, max(0, counted − Included), for a flat price that includes
	// Included units plus a metered price (or meter) for the overage; it
	// requires Overage. The default value false bills every counted unit,
	// for example through graduated tiers whose first tier is free up to
	// Included. (Environment PLAN_<TIER>_BILL and JSON "bill": "all" or
	// "overage".)
	//
	// The units reported for a period never decrease: when a tier change
	// raises Included within a period, what was already reported stands
	// and nothing more is reported until the counter passes it again;
	// when it lowers Included, the units between the two are reported. A
	// period is billed with the Included of the tier it ended on
	// (Entitlement.PreviousTier once it is the previous period).
	OverageOnly bool `json:"-"`
	// Interval is the counting interval used when no subscription period is
	// known, for every meter. The zero value is quota.Month.
	Interval quota.Interval `json:"-"`
	// Meters are the plan's meters when it has several (or one not named
	// "requests"); each has the fields above under its own name. When
	// Meters is set, the one-meter fields above must be zero, and a meter
	// named "requests" is the quota middleware's default meter. The
	// checkout catalog ([Plans.Tier]) sells the first metered price of the
	// plan's meters only: subscribe the other meters' prices another way
	// (see the package documentation, "Meters"). The default value nil
	// means the one meter "requests" of the fields above.
	Meters []Meter `json:"meters,omitempty"`
	// Features are the plan's boolean features, for example "sso" or
	// "export", answered by [Lifecycle.HasFeature]: each a printable name
	// of at most 80 bytes without white space or commas (the form of a
	// Stripe feature's lookup key). The default value nil lists none.
	Features []string `json:"features,omitempty"`
}

// Meter is one metered quantity of a [Plan], such as "requests" or
// "tokens": the units the plan includes of it per period, its limits, and
// the Stripe meter event or metered price its usage is billed under. Its
// fields mean what the Plan fields of the same names mean for the
// one-meter plan. A Meter is a plain value; its zero value has no name and
// is invalid in a plan.
type Meter struct {
	// Name is the quota meter the limits apply to and whose counters the
	// usage reporter bills. Required: a lower-case letter, then lower-case
	// letters, digits and '_', at most 64 bytes.
	Name string `json:"name"`
	// Included, Soft, Hard, Overage, OverageOnly, MeteredPriceID and
	// MeterEventName are as in [Plan].
	Included       int64  `json:"included"`
	Soft           int64  `json:"soft,omitempty"`
	Hard           int64  `json:"hard,omitempty"`
	Overage        bool   `json:"overage,omitempty"`
	OverageOnly    bool   `json:"-"`
	MeteredPriceID string `json:"metered_price_id,omitempty"`
	MeterEventName string `json:"meter_event_name,omitempty"`
}

// AllMeters returns the plan's meters: a copy of Meters, or when it is
// empty the one meter named quota.DefaultMeter ("requests") that the
// plan's own fields describe.
func (p Plan) AllMeters() []Meter {
	if len(p.Meters) > 0 {
		return slices.Clone(p.Meters)
	}
	return []Meter{p.requestsMeter()}
}

// requestsMeter is the meter of a one-meter plan's own fields.
func (p Plan) requestsMeter() Meter {
	return Meter{Name: quota.DefaultMeter, Included: p.Included, Soft: p.Soft, Hard: p.Hard, Overage: p.Overage,
		OverageOnly: p.OverageOnly, MeteredPriceID: p.MeteredPriceID, MeterEventName: p.MeterEventName}
}

// meter returns the plan's meter name ("" is quota.DefaultMeter), without
// allocating.
func (p Plan) meter(name string) (Meter, bool) {
	if name == "" {
		name = quota.DefaultMeter
	}
	if len(p.Meters) == 0 {
		if name == quota.DefaultMeter {
			return p.requestsMeter(), true
		}
		return Meter{}, false
	}
	for _, m := range p.Meters {
		if m.Name == name {
			return m, true
		}
	}
	return Meter{}, false
}

// meteredPrice returns the first metered price of the plan's meters, ""
// when none has one: the price checkout sells with the plan, and whose
// subscription item is Entitlement.MeteredItemID.
func (p Plan) meteredPrice() string {
	if len(p.Meters) == 0 {
		return p.MeteredPriceID
	}
	for _, m := range p.Meters {
		if m.MeteredPriceID != "" {
			return m.MeteredPriceID
		}
	}
	return ""
}

// Limits returns the plan's quota limits of meter ("" means
// quota.DefaultMeter) for the billing period period (the zero period
// counts by Interval). For a meter the plan does not have it returns the
// zero Limits with Plan set, which allow nothing.
func (p Plan) Limits(meter string, period quota.Period) quota.Limits {
	m, ok := p.meter(meter)
	if !ok {
		return quota.Limits{Plan: p.Tier}
	}
	return m.limits(p, period)
}

func (m Meter) limits(p Plan, period quota.Period) quota.Limits {
	return quota.Limits{Plan: p.Tier, Included: m.Included, Soft: m.Soft, Hard: m.Hard, Overage: m.Overage,
		Period: period, Interval: p.Interval}
}

// parseBill reads the "all" or "overage" of PLAN_<TIER>_BILL and JSON
// "bill": whether the plan bills overage only.
func parseBill(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "all":
		return false, nil
	case "overage":
		return true, nil
	}
	return false, errors.New("not all or overage")
}

var (
	tierRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	meterRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)
)

// maxFeatureLen is the longest feature name: Stripe's limit on a
// feature's lookup key.
const maxFeatureLen = 80

// validFeature reports whether f can name a feature.
func validFeature(f string) bool {
	if f == "" || len(f) > maxFeatureLen {
		return false
	}
	for _, r := range f {
		if r <= ' ' || r == ',' || r == 0x7f {
			return false
		}
	}
	return true
}

// namer names a field of a plan for an error message, in the vocabulary of
// the plan's source (Go field, environment variable or JSON key): meter is
// the index in Plan.Meters, or -1 for the plan's own fields.
type namer func(meter int, field string) string

// validate checks p.
func (p Plan) validate(name namer) error {
	bad := func(meter int, f, msg string) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidConfig, name(meter, f), msg)
	}
	switch {
	case p.Tier == "":
		return bad(-1, "Tier", "required")
	case !tierRE.MatchString(p.Tier):
		return bad(-1, "Tier", "must be lower-case letters, digits, '-' or '_'")
	case p.PriceID == "":
		return bad(-1, "PriceID", "required (the tier's Stripe price ID)")
	case strings.ContainsAny(p.PriceID, " \t\r\n"):
		return bad(-1, "PriceID", "contains white space")
	case p.Interval != quota.Month && p.Interval != quota.Day:
		return bad(-1, "Interval", "unknown interval")
	}
	for _, f := range p.Features {
		if !validFeature(f) {
			return bad(-1, "Features", fmt.Sprintf("a feature must be 1 to %d printable bytes without white space or commas", maxFeatureLen))
		}
	}
	if len(p.Meters) == 0 {
		return p.requestsMeter().validate(p, func(f string) string { return name(-1, f) })
	}
	one := p.requestsMeter()
	one.Name = ""
	if one != (Meter{}) {
		for _, f := range []struct {
			name string
			set  bool
		}{{"Included", one.Included != 0}, {"Soft", one.Soft != 0}, {"Hard", one.Hard != 0}, {"Overage", one.Overage},
			{"OverageOnly", one.OverageOnly}, {"MeteredPriceID", one.MeteredPriceID != ""}, {"MeterEventName", one.MeterEventName != ""}} {
			if f.set {
				return bad(-1, f.name, "set with Meters: set it on a meter (a meter named \"requests\" for the default meter)")
			}
		}
	}
	for i, m := range p.Meters {
		field := func(f string) string { return name(i, f) }
		switch {
		case !meterRE.MatchString(m.Name):
			return bad(i, "Name", "must be a lower-case letter, then lower-case letters, digits or '_', at most 64 bytes")
		case slices.ContainsFunc(p.Meters[:i], func(o Meter) bool { return o.Name == m.Name }):
			return bad(i, "Name", "duplicate meter name")
		case m.MeteredPriceID != "" && slices.ContainsFunc(p.Meters[:i], func(o Meter) bool { return o.MeteredPriceID == m.MeteredPriceID }):
			return bad(i, "MeteredPriceID", "another meter of the plan has the same metered price")
		case m.MeterEventName != "" && slices.ContainsFunc(p.Meters[:i], func(o Meter) bool { return o.MeterEventName == m.MeterEventName }):
			return bad(i, "MeterEventName", "another meter of the plan has the same meter event name")
		}
		if err := m.validate(p, field); err != nil {
			return err
		}
	}
	return nil
}

// validate checks one meter of p; field names its fields.
func (m Meter) validate(p Plan, field func(string) string) error {
	bad := func(f, msg string) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidConfig, field(f), msg)
	}
	lim := m.limits(p, quota.Period{}).Limit()
	switch {
	case m.Included < 0:
		return bad("Included", "must not be negative")
	case m.Soft < 0:
		return bad("Soft", "must not be negative")
	case m.Hard < 0:
		return bad("Hard", "must not be negative")
	case m.Hard > 0 && m.Hard < m.Included:
		return bad("Hard", "is below "+field("Included"))
	case m.Included == 0 && m.Hard == 0 && !m.Overage:
		return bad("Included", "required: the meter would allow no units")
	case m.Included == 0 && !m.Overage:
		// Without overage quota caps usage at Included, so Hard alone
		// allows nothing: every request would be denied.
		return bad("Included", "0 without overage allows no units (Hard applies only with overage): set Included, or Overage with a metered price")
	case m.Soft > 0 && lim > 0 && m.Soft > lim:
		return bad("Soft", "is above the hard limit")
	case m.Overage && m.MeteredPriceID == "" && m.MeterEventName == "":
		return bad("MeteredPriceID", "overage needs a metered price ID or a meter event name")
	case strings.ContainsAny(m.MeteredPriceID, " \t\r\n"):
		return bad("MeteredPriceID", "contains white space")
	case m.MeteredPriceID != "" && m.MeteredPriceID == p.PriceID:
		return bad("MeteredPriceID", "must differ from PriceID")
	case m.OverageOnly && !m.Overage:
		return bad("OverageOnly", "overage billing needs Overage: without it no unit above Included is allowed")
	}
	return nil
}

// Plans is a validated, read-only catalog of plans. It is safe for
// concurrent use. The zero value is an empty catalog; build one with
// [NewPlans], [PlansFromEnv] or [PlansFromJSON].
type Plans struct {
	list    []Plan
	byTier  map[string]int
	byPrice map[string]int
	metered map[string]int // every meter's metered price → the first plan that has it
}

// NewPlans validates plans and returns their catalog. Errors wrap
// [ErrInvalidConfig] and name the plan and the field, as in
// plans[1].Meters[0].Hard.
func NewPlans(plans ...Plan) (*Plans, error) {
	return newPlans(plans, func(i, m int, f string) string {
		if m >= 0 {
			return fmt.Sprintf("plans[%d].Meters[%d].%s", i, m, f)
		}
		return fmt.Sprintf("plans[%d].%s", i, f)
	})
}

func newPlans(plans []Plan, field func(plan, meter int, f string) string) (*Plans, error) {
	c := &Plans{byTier: map[string]int{}, byPrice: map[string]int{}, metered: map[string]int{}}
	if len(plans) == 0 {
		return nil, fmt.Errorf("%w: no plans configured", ErrInvalidConfig)
	}
	for i, p := range plans {
		name := func(m int, f string) string { return field(i, m, f) }
		if err := p.validate(name); err != nil {
			return nil, err
		}
		if j, dup := c.byTier[p.Tier]; dup {
			return nil, fmt.Errorf("%w: %s: the same tier as %s", ErrInvalidConfig, name(-1, "Tier"), field(j, -1, "Tier"))
		}
		if j, dup := c.byPrice[p.PriceID]; dup {
			return nil, fmt.Errorf("%w: %s: the same price as %s", ErrInvalidConfig, name(-1, "PriceID"), field(j, -1, "PriceID"))
		}
		if _, dup := c.metered[p.PriceID]; dup {
			return nil, fmt.Errorf("%w: %s: the price is another plan's metered price", ErrInvalidConfig, name(-1, "PriceID"))
		}
		for m, mt := range p.AllMeters() {
			if len(p.Meters) == 0 {
				m = -1
			}
			if _, dup := c.byPrice[mt.MeteredPriceID]; dup && mt.MeteredPriceID != "" {
				return nil, fmt.Errorf("%w: %s: the price is a plan's licensed price", ErrInvalidConfig, name(m, "MeteredPriceID"))
			}
		}
		for _, mt := range p.AllMeters() {
			if _, seen := c.metered[mt.MeteredPriceID]; mt.MeteredPriceID != "" && !seen {
				c.metered[mt.MeteredPriceID] = i
			}
		}
		p.Meters = slices.Clone(p.Meters)
		p.Features = slices.Clone(p.Features)
		c.byTier[p.Tier] = i
		c.byPrice[p.PriceID] = i
		c.list = append(c.list, p)
	}
	return c, nil
}

// ByTier returns the plan of tier. Its Meters and Features are shared
// with the catalog: do not modify them.
func (c *Plans) ByTier(tier string) (Plan, bool) {
	if c == nil {
		return Plan{}, false
	}
	i, ok := c.byTier[tier]
	if !ok {
		return Plan{}, false
	}
	return c.list[i], true
}

// byPriceID returns the plan whose licensed price is priceID.
func (c *Plans) byPriceID(priceID string) (Plan, bool) {
	if c == nil {
		return Plan{}, false
	}
	i, ok := c.byPrice[priceID]
	if !ok {
		return Plan{}, false
	}
	return c.list[i], true
}

// isMeteredPrice reports whether priceID is the metered price of some
// plan's meter.
func (c *Plans) isMeteredPrice(priceID string) bool {
	if c == nil {
		return false
	}
	_, ok := c.metered[priceID]
	return ok
}

// Tier returns the Stripe prices of tier for checkout: Plans is the
// [checkout.Catalog] of billkit's plans, so that a plan's prices are
// declared once. Its metered price is the first metered price of the
// plan's meters.
func (c *Plans) Tier(name string) (checkout.Tier, bool) {
	p, ok := c.ByTier(name)
	if !ok {
		return checkout.Tier{}, false
	}
	return checkout.Tier{Name: p.Tier, PriceID: p.PriceID, MeteredPriceID: p.meteredPrice()}, true
}

var _ checkout.Catalog = (*Plans)(nil)

// Tiers returns the tier names in the order they were configured.
func (c *Plans) Tiers() []string {
	if c == nil {
		return nil
	}
	out := make([]string, len(c.list))
	for i, p := range c.list {
		out[i] = p.Tier
	}
	return out
}
