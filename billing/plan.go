package billing

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/billkit/billkit/checkout"
	"github.com/billkit/billkit/quota"
)

// Plan is one pricing tier: the Stripe price a subscription to it carries,
// and what it allows per billing period.
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
	// known. The zero value is quota.Month.
	Interval quota.Interval `json:"-"`
}

// Limits returns the plan's quota limits for the billing period p (the zero
// period counts by Interval).
func (p Plan) Limits(period quota.Period) quota.Limits {
	return quota.Limits{
		Plan:     p.Tier,
		Included: p.Included,
		Soft:     p.Soft,
		Hard:     p.Hard,
		Overage:  p.Overage,
		Period:   period,
		Interval: p.Interval,
	}
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

var tierRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

// validate checks p; field names a field for the error message in the
// vocabulary of the plan's source (Go field, env variable or JSON key).
func (p Plan) validate(field func(string) string) error {
	bad := func(f, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidConfig, field(f), fmt.Sprintf(format, args...))
	}
	switch {
	case p.Tier == "":
		return bad("Tier", "required")
	case !tierRE.MatchString(p.Tier):
		return bad("Tier", "%q must be lower-case letters, digits, '-' or '_'", p.Tier)
	case p.PriceID == "":
		return bad("PriceID", "required (the tier's Stripe price ID)")
	case strings.ContainsAny(p.PriceID, " \t\r\n"):
		return bad("PriceID", "contains white space")
	case p.Included < 0:
		return bad("Included", "must not be negative, got %d", p.Included)
	case p.Soft < 0:
		return bad("Soft", "must not be negative, got %d", p.Soft)
	case p.Hard < 0:
		return bad("Hard", "must not be negative, got %d", p.Hard)
	case p.Hard > 0 && p.Hard < p.Included:
		return bad("Hard", "%d is below Included %d", p.Hard, p.Included)
	case p.Included == 0 && p.Hard == 0 && !p.Overage:
		return bad("Included", "required: the plan would allow no units")
	case p.Included == 0 && !p.Overage:
		// Without overage quota caps usage at Included, so Hard alone
		// allows nothing: every request would be denied.
		return bad("Included", "0 without overage allows no units (Hard %d applies only with overage): set Included, or Overage with a metered price", p.Hard)
	case p.Soft > 0 && p.Limits(quota.Period{}).Limit() > 0 && p.Soft > p.Limits(quota.Period{}).Limit():
		return bad("Soft", "%d is above the hard limit %d", p.Soft, p.Limits(quota.Period{}).Limit())
	case p.Overage && p.MeteredPriceID == "" && p.MeterEventName == "":
		return bad("MeteredPriceID", "overage needs a metered price ID or a meter event name")
	case p.MeteredPriceID != "" && p.MeteredPriceID == p.PriceID:
		return bad("MeteredPriceID", "must differ from PriceID")
	case p.Interval != quota.Month && p.Interval != quota.Day:
		return bad("Interval", "unknown interval %d", p.Interval)
	case p.OverageOnly && !p.Overage:
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
	metered map[string]int
}

// NewPlans validates plans and returns their catalog. Errors wrap
// [ErrInvalidConfig] and name the plan and the field.
func NewPlans(plans ...Plan) (*Plans, error) {
	return newPlans(plans, func(i int, f string) string {
		return fmt.Sprintf("plans[%d].%s", i, f)
	})
}

func newPlans(plans []Plan, field func(i int, f string) string) (*Plans, error) {
	c := &Plans{byTier: map[string]int{}, byPrice: map[string]int{}, metered: map[string]int{}}
	if len(plans) == 0 {
		return nil, fmt.Errorf("%w: no plans configured", ErrInvalidConfig)
	}
	for i, p := range plans {
		f := func(name string) string { return field(i, name) }
		if err := p.validate(f); err != nil {
			return nil, err
		}
		if _, dup := c.byTier[p.Tier]; dup {
			return nil, fmt.Errorf("%w: %s: duplicate tier %q", ErrInvalidConfig, f("Tier"), p.Tier)
		}
		if j, dup := c.byPrice[p.PriceID]; dup {
			return nil, fmt.Errorf("%w: %s: price %q is also tier %q's", ErrInvalidConfig, f("PriceID"), p.PriceID, plans[j].Tier)
		}
		if j, dup := c.metered[p.PriceID]; dup {
			return nil, fmt.Errorf("%w: %s: price %q is tier %q's metered price", ErrInvalidConfig, f("PriceID"), p.PriceID, plans[j].Tier)
		}
		if p.MeteredPriceID != "" {
			if j, dup := c.byPrice[p.MeteredPriceID]; dup {
				return nil, fmt.Errorf("%w: %s: price %q is tier %q's licensed price", ErrInvalidConfig, f("MeteredPriceID"), p.MeteredPriceID, plans[j].Tier)
			}
			if _, seen := c.metered[p.MeteredPriceID]; !seen {
				c.metered[p.MeteredPriceID] = i
			}
		}
		c.byTier[p.Tier] = i
		c.byPrice[p.PriceID] = i
		c.list = append(c.list, p)
	}
	return c, nil
}

// ByTier returns the plan of tier.
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

// isMeteredPrice reports whether priceID is some plan's MeteredPriceID.
func (c *Plans) isMeteredPrice(priceID string) bool {
	if c == nil {
		return false
	}
	_, ok := c.metered[priceID]
	return ok
}

// Tier returns the Stripe prices of tier for checkout: Plans is the
// [checkout.Catalog] of billkit's plans, so that a plan's prices are
// declared once.
func (c *Plans) Tier(name string) (checkout.Tier, bool) {
	p, ok := c.ByTier(name)
	if !ok {
		return checkout.Tier{}, false
	}
	return checkout.Tier{Name: p.Tier, PriceID: p.PriceID, MeteredPriceID: p.MeteredPriceID}, true
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

// Environment variable names read by [PlansFromEnv], with <TIER> the
// upper-case tier name. The PRICE_ variables are the ones the checkout
// package's catalog reads, so one environment configures both.
const (
	envPricePrefix    = "PRICE_"   // PRICE_<TIER>: the tier's Stripe price ID
	envMeteredSuffix  = "_METERED" // PRICE_<TIER>_METERED: the tier's metered price ID
	envPlanPrefix     = "PLAN_"    // PLAN_<TIER>_<FIELD>: the plan's limits
	envPlanFieldNames = "INCLUDED, SOFT, HARD, OVERAGE, METER_EVENT, INTERVAL, BILL"
)

// PlansFromEnv builds the catalog from environment entries in the form
// returned by os.Environ ("KEY=value"). Every PRICE_<TIER> variable defines
// tier strings.ToLower(<TIER>) with that price, PRICE_<TIER>_METERED its
// metered price (as the checkout catalog reads them), and these variables
// configure it:
//
//	PLAN_<TIER>_INCLUDED      units included per period (integer)
//	PLAN_<TIER>_SOFT          soft limit (integer, 0 = none)
//	PLAN_<TIER>_HARD          hard limit (integer, 0 = INCLUDED, or no cap with overage)
//	PLAN_<TIER>_OVERAGE       true to allow and bill usage above INCLUDED
//	PLAN_<TIER>_METER_EVENT   the billing meter event name overage is billed under
//	PLAN_<TIER>_INTERVAL      month (default) or day, when no billing period is known
//	PLAN_<TIER>_BILL          all (default): report every unit; overage: only units above INCLUDED
//
// Plans come out sorted by tier name. Errors wrap [ErrInvalidConfig] and name
// the variable. A PLAN_ variable that names no tier or no field above is an
// error, so that a typo is not silently ignored.
func PlansFromEnv(environ []string) (*Plans, error) {
	env := map[string]string{}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if ok {
			env[k] = v
		}
	}
	// The PRICE_* variables are checkout's: one parser for both.
	prices, err := checkout.PricesFromEnviron(environ)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	tiers := prices.Tiers()
	keys := make([]string, len(tiers))
	used := map[string]bool{}
	plans := make([]Plan, 0, len(tiers))
	for i, tier := range tiers {
		t, _ := prices.Tier(tier)
		key := strings.TrimPrefix(checkout.EnvVar(tier), checkout.EnvPrefix)
		keys[i] = key
		p := Plan{Tier: t.Name, PriceID: t.PriceID, MeteredPriceID: t.MeteredPriceID}
		name := func(f string) string { used[envPlanPrefix+key+"_"+f] = true; return envPlanPrefix + key + "_" + f }
		ints := []struct {
			f   string
			dst *int64
		}{{"INCLUDED", &p.Included}, {"SOFT", &p.Soft}, {"HARD", &p.Hard}}
		for _, x := range ints {
			if v, ok := env[name(x.f)]; ok {
				n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				if err != nil {
					return nil, fmt.Errorf("%w: %s: not an integer", ErrInvalidConfig, name(x.f))
				}
				*x.dst = n
			}
		}
		if v, ok := env[name("OVERAGE")]; ok {
			b, err := strconv.ParseBool(strings.TrimSpace(v))
			if err != nil {
				return nil, fmt.Errorf("%w: %s: not true or false", ErrInvalidConfig, name("OVERAGE"))
			}
			p.Overage = b
		}
		p.MeterEventName = strings.TrimSpace(env[name("METER_EVENT")])
		if v, ok := env[name("INTERVAL")]; ok {
			iv, err := parseInterval(v)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %v", ErrInvalidConfig, name("INTERVAL"), err)
			}
			p.Interval = iv
		}
		if v, ok := env[name("BILL")]; ok {
			b, err := parseBill(v)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %v", ErrInvalidConfig, name("BILL"), err)
			}
			p.OverageOnly = b
		}
		plans = append(plans, p)
	}
	for k := range env {
		if strings.HasPrefix(k, envPlanPrefix) && !used[k] {
			return nil, fmt.Errorf("%w: %s: not a PLAN_<TIER>_<FIELD> variable of a tier with a PRICE_<TIER> (fields: %s)",
				ErrInvalidConfig, k, envPlanFieldNames)
		}
	}
	envField := map[string]string{
		"Included": "_INCLUDED", "Soft": "_SOFT", "Hard": "_HARD",
		"Overage": "_OVERAGE", "MeterEventName": "_METER_EVENT", "Interval": "_INTERVAL", "OverageOnly": "_BILL",
	}
	return newPlans(plans, func(i int, f string) string {
		switch f {
		case "Tier", "PriceID":
			return envPricePrefix + keys[i]
		case "MeteredPriceID":
			return envPricePrefix + keys[i] + envMeteredSuffix
		}
		return envPlanPrefix + keys[i] + envField[f]
	})
}

func parseInterval(s string) (quota.Interval, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "month":
		return quota.Month, nil
	case "day":
		return quota.Day, nil
	}
	return 0, errors.New("not month or day")
}

// planJSON is the JSON form of a plan.
type planJSON struct {
	Tier           string `json:"tier"`
	PriceID        string `json:"price_id"`
	Included       int64  `json:"included"`
	Soft           int64  `json:"soft"`
	Hard           int64  `json:"hard"`
	Overage        bool   `json:"overage"`
	MeteredPriceID string `json:"metered_price_id"`
	MeterEventName string `json:"meter_event_name"`
	Interval       string `json:"interval"`
	Bill           string `json:"bill"`
}

var jsonField = map[string]string{
	"Tier": "tier", "PriceID": "price_id", "Included": "included", "Soft": "soft", "Hard": "hard",
	"Overage": "overage", "MeteredPriceID": "metered_price_id", "MeterEventName": "meter_event_name", "Interval": "interval",
	"OverageOnly": "bill",
}

// PlansFromJSON builds the catalog from JSON of the form
//
//	{"plans": [{"tier": "pro", "price_id": "price_123", "included": 10000,
//	            "soft": 8000, "hard": 12000, "overage": true,
//	            "metered_price_id": "price_456", "meter_event_name": "api_requests",
//	            "interval": "month", "bill": "overage"}]}
//
// Unknown keys are errors. Errors wrap [ErrInvalidConfig] and name the JSON
// field, as in plans[1].hard.
func PlansFromJSON(data []byte) (*Plans, error) {
	var doc struct {
		Plans []planJSON `json:"plans"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	plans := make([]Plan, len(doc.Plans))
	for i, pj := range doc.Plans {
		iv, err := parseInterval(pj.Interval)
		if err != nil {
			return nil, fmt.Errorf("%w: plans[%d].interval: %v", ErrInvalidConfig, i, err)
		}
		bill, err := parseBill(pj.Bill)
		if err != nil {
			return nil, fmt.Errorf("%w: plans[%d].bill: %v", ErrInvalidConfig, i, err)
		}
		plans[i] = Plan{Tier: pj.Tier, PriceID: pj.PriceID, Included: pj.Included, Soft: pj.Soft, Hard: pj.Hard,
			Overage: pj.Overage, MeteredPriceID: pj.MeteredPriceID, MeterEventName: pj.MeterEventName, Interval: iv, OverageOnly: bill}
	}
	return newPlans(plans, func(i int, f string) string { return fmt.Sprintf("plans[%d].%s", i, jsonField[f]) })
}
