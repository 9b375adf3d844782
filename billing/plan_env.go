package billing

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/billkit/billkit/checkout"
	"github.com/billkit/billkit/quota"
)

// Environment variable names read by [PlansFromEnv], with <TIER> the
// upper-case tier name and <METER> the upper-case meter name. The PRICE_
// variables are the ones the checkout package's catalog reads, so one
// environment configures both.
const (
	envPricePrefix   = "PRICE_"   // PRICE_<TIER>: the tier's Stripe price ID
	envMeteredSuffix = "_METERED" // PRICE_<TIER>_METERED: the requests meter's metered price ID
	envPlanPrefix    = "PLAN_"    // PLAN_<TIER>_<FIELD>, PLAN_<TIER>_<METER>_<FIELD>
	envFieldNames    = "PLAN_<TIER>_ INCLUDED, SOFT, HARD, OVERAGE, METER_EVENT, BILL, INTERVAL, FEATURES; " +
		"PLAN_<TIER>_<METER>_ INCLUDED, SOFT, HARD, OVERAGE, METER_EVENT, BILL, METERED_PRICE"
)

// The fields of PLAN_<TIER>_<FIELD> and PLAN_<TIER>_<METER>_<FIELD>, and
// the Go field each one sets.
var (
	envPlanFields  = []string{"INCLUDED", "SOFT", "HARD", "OVERAGE", "METER_EVENT", "BILL", "INTERVAL", "FEATURES"}
	envMeterFields = []string{"METERED_PRICE", "METER_EVENT", "INCLUDED", "OVERAGE", "SOFT", "HARD", "BILL"} // longest first
	envGoField     = map[string]string{
		"Included": "INCLUDED", "Soft": "SOFT", "Hard": "HARD", "Overage": "OVERAGE", "MeterEventName": "METER_EVENT",
		"OverageOnly": "BILL", "Interval": "INTERVAL", "Features": "FEATURES", "MeteredPriceID": "METERED_PRICE",
	}
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
//	PLAN_<TIER>_METER_EVENT   the billing meter event name usage is billed under
//	PLAN_<TIER>_BILL          all (default): report every unit; overage: only units above INCLUDED
//	PLAN_<TIER>_INTERVAL      month (default) or day, when no billing period is known
//	PLAN_<TIER>_FEATURES      the plan's features, comma-separated (sso,export)
//
// These describe the meter "requests" (quota.DefaultMeter), with
// PRICE_<TIER>_METERED as its metered price. Every other meter of the plan
// has the same variables under its upper-case name, and its metered price
// in a PLAN_ variable (checkout's parser takes every PRICE_ variable for a
// tier):
//
//	PLAN_<TIER>_<METER>_INCLUDED, _SOFT, _HARD, _OVERAGE, _METER_EVENT, _BILL
//	PLAN_<TIER>_<METER>_METERED_PRICE   the meter's metered price ID
//
// so PLAN_PRO_TOKENS_INCLUDED=50000 gives tier pro a meter "tokens". A
// plan with such variables has Plan.Meters: "requests" first, when any of
// its variables above or PRICE_<TIER>_METERED is set, then the other
// meters by name. PLAN_<TIER>_REQUESTS_<FIELD> is refused: the requests
// meter's variables are PLAN_<TIER>_<FIELD>.
//
// Plans come out sorted by tier name. Errors wrap [ErrInvalidConfig] and
// name the variable, never its value. A PLAN_ variable that names no tier
// or no field above is an error, so that a typo is not silently ignored,
// and so is one that two tiers could both claim (PLAN_PRO_TOKENS_INCLUDED
// with tiers pro and pro_tokens).
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
	keys := make([]string, len(tiers)) // PRO for tier pro
	for i, tier := range tiers {
		keys[i] = strings.TrimPrefix(checkout.EnvVar(tier), checkout.EnvPrefix)
	}
	// vars[i][meter][field] is the value of a PLAN_ variable of tier i;
	// meter "" holds the plan's own fields.
	vars := make([]map[string]map[string]string, len(tiers))
	for i := range vars {
		vars[i] = map[string]map[string]string{"": {}}
	}
	names := make([]string, 0, len(env))
	for k := range env {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if !strings.HasPrefix(k, envPlanPrefix) {
			continue
		}
		tier, meter, field, err := parsePlanVar(k, keys)
		if err != nil {
			return nil, err
		}
		if vars[tier][meter] == nil {
			vars[tier][meter] = map[string]string{}
		}
		vars[tier][meter][field] = env[k]
	}

	plans := make([]Plan, 0, len(tiers))
	meterKeys := make([][]string, len(tiers)) // the <METER> of each of Plan.Meters, "" for requests
	for i, tier := range tiers {
		t, _ := prices.Tier(tier)
		key := keys[i]
		p := Plan{Tier: t.Name, PriceID: t.PriceID}
		plain := vars[i][""]
		varName := func(meter, f string) string {
			if meter == "" {
				return envPlanPrefix + key + "_" + f
			}
			return envPlanPrefix + key + "_" + meter + "_" + f
		}
		req := Meter{Name: quota.DefaultMeter, MeteredPriceID: t.MeteredPriceID}
		if err := setMeterVars(&req, plain, func(f string) string { return varName("", f) }); err != nil {
			return nil, err
		}
		if v, ok := plain["INTERVAL"]; ok {
			iv, err := parseInterval(v)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %v", ErrInvalidConfig, varName("", "INTERVAL"), err)
			}
			p.Interval = iv
		}
		if v, ok := plain["FEATURES"]; ok {
			for _, f := range strings.Split(v, ",") {
				if f = strings.TrimSpace(f); f != "" {
					p.Features = append(p.Features, f)
				}
			}
		}
		var others []string
		for m := range vars[i] {
			if m != "" {
				others = append(others, m)
			}
		}
		slices.Sort(others)
		if len(others) == 0 {
			p.Included, p.Soft, p.Hard, p.Overage = req.Included, req.Soft, req.Hard, req.Overage
			p.OverageOnly, p.MeteredPriceID, p.MeterEventName = req.OverageOnly, req.MeteredPriceID, req.MeterEventName
		} else {
			hasReq := req.MeteredPriceID != ""
			for _, f := range envMeterFields {
				if _, ok := plain[f]; ok {
					hasReq = true
				}
			}
			if hasReq {
				p.Meters = append(p.Meters, req)
				meterKeys[i] = append(meterKeys[i], "")
			}
			for _, mk := range others {
				m := Meter{Name: strings.ToLower(mk)}
				if err := setMeterVars(&m, vars[i][mk], func(f string) string { return varName(mk, f) }); err != nil {
					return nil, err
				}
				p.Meters = append(p.Meters, m)
				meterKeys[i] = append(meterKeys[i], mk)
			}
		}
		plans = append(plans, p)
	}
	return newPlans(plans, func(i, m int, f string) string {
		meter := ""
		if m >= 0 {
			meter = meterKeys[i][m]
		}
		switch {
		case f == "Tier", f == "PriceID":
			return envPricePrefix + keys[i]
		case f == "MeteredPriceID" && meter == "":
			return envPricePrefix + keys[i] + envMeteredSuffix
		case f == "Name":
			return envPlanPrefix + keys[i] + "_" + meter + "_*"
		case meter == "":
			return envPlanPrefix + keys[i] + "_" + envGoField[f]
		}
		return envPlanPrefix + keys[i] + "_" + meter + "_" + envGoField[f]
	})
}

// parsePlanVar splits the PLAN_ variable k into the index of its tier in
// keys, its meter ("" for the plan's own fields) and its field.
func parsePlanVar(k string, keys []string) (tier int, meter, field string, err error) {
	tier = -1
	for i, key := range keys {
		rest, ok := strings.CutPrefix(k, envPlanPrefix+key+"_")
		if !ok {
			continue
		}
		m, f, ok := splitPlanField(rest)
		if !ok {
			continue
		}
		if tier >= 0 {
			return 0, "", "", fmt.Errorf("%w: %s: ambiguous: a variable of two tiers (rename a tier)", ErrInvalidConfig, k)
		}
		tier, meter, field = i, m, f
	}
	if tier < 0 {
		return 0, "", "", fmt.Errorf("%w: %s: not a PLAN_ variable of a tier with a PRICE_<TIER> (%s)", ErrInvalidConfig, k, envFieldNames)
	}
	if strings.EqualFold(meter, quota.DefaultMeter) {
		return 0, "", "", fmt.Errorf("%w: %s: the %s meter's variables are PLAN_<TIER>_<FIELD>", ErrInvalidConfig, k, quota.DefaultMeter)
	}
	return tier, meter, field, nil
}

// splitPlanField splits what follows PLAN_<TIER>_ into a meter and a field.
func splitPlanField(rest string) (meter, field string, ok bool) {
	if slices.Contains(envPlanFields, rest) {
		return "", rest, true
	}
	for _, f := range envMeterFields {
		if m, found := strings.CutSuffix(rest, "_"+f); found && m != "" {
			return m, f, true
		}
	}
	return "", "", false
}

// setMeterVars sets m's fields from the values of its variables; name
// names a field's variable.
func setMeterVars(m *Meter, vals map[string]string, name func(f string) string) error {
	for _, x := range []struct {
		f   string
		dst *int64
	}{{"INCLUDED", &m.Included}, {"SOFT", &m.Soft}, {"HARD", &m.Hard}} {
		if v, ok := vals[x.f]; ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return fmt.Errorf("%w: %s: not an integer", ErrInvalidConfig, name(x.f))
			}
			*x.dst = n
		}
	}
	if v, ok := vals["OVERAGE"]; ok {
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%w: %s: not true or false", ErrInvalidConfig, name("OVERAGE"))
		}
		m.Overage = b
	}
	if v, ok := vals["BILL"]; ok {
		b, err := parseBill(v)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrInvalidConfig, name("BILL"), err)
		}
		m.OverageOnly = b
	}
	if v, ok := vals["METER_EVENT"]; ok {
		m.MeterEventName = strings.TrimSpace(v)
	}
	if v, ok := vals["METERED_PRICE"]; ok {
		if m.MeteredPriceID = strings.TrimSpace(v); m.MeteredPriceID == "" {
			return fmt.Errorf("%w: %s: empty", ErrInvalidConfig, name("METERED_PRICE"))
		}
	}
	return nil
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
