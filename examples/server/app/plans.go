package app

import (
	"errors"
	"regexp"
	"strconv"
	"strings"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/checkout"
	"github.com/billkit/billkit/examples/server/internal/demo"
)

// Demo price IDs and meter event names, used when no PRICE_* variable is
// set so that the whole subscription lifecycle can be walked offline with
// send-event. The prices are well-formed but exist in no Stripe account:
// Checkout against real Stripe needs PRICE_STARTER and PRICE_PRO.
const (
	demoPriceStarter     = demo.PriceStarter     // price_1DemoStarter0000000000
	demoPricePro         = demo.PricePro         // price_1DemoPro00000000000000
	demoPriceProMetered  = demo.PriceProMetered  // price_1DemoProMetered000000
	demoMeterEvent       = demo.MeterEvent       // api_requests
	demoTokensMeterEvent = demo.TokensMeterEvent // api_tokens
)

// The meters and the feature the example sells besides requests: tokens,
// counted by POST /v1/complete after the fact, and the export behind
// GET /v1/export.
const (
	tokensMeter   = "tokens"
	exportFeature = "export"
)

// Limits of the example's starter and pro plans, per billing period: the
// defaults of their PLAN_<TIER>_* variables. Both plans sell tokens, so
// that a past_due subscriber in starter's grace keeps a (smaller)
// allowance of completions; only pro has the export feature.
const (
	starterIncluded = 1_000
	starterSoft     = 800
	proIncluded     = 10_000
	proSoft         = 8_000
	proHard         = 50_000 // with overage: 40,000 units of overage at most

	starterTokensIncluded = 10_000 // and no overage: the cap
	proTokensIncluded     = 100_000
	proTokensHard         = 500_000 // with overage: 400,000 tokens of overage at most
)

// graceTier is the tier whose limits a past_due subscriber keeps for
// gracePeriod (see gracePolicy); every configuration must have it.
const graceTier = "starter"

// readPlans reads the plans sold with billing.PlansFromEnv, from environ
// with the example's defaults added by [planEnviron]. demoPrices reports
// that no PRICE_* variable was set, so that the plans are the demo ones.
// Every error is a *[ConfigError] naming a variable, with no value that
// looks like a secret.
func readPlans(environ []string) (plans *billing.Plans, demoPrices bool, errs []error) {
	env, demoPrices := planEnviron(environ)
	if errs = checkPlanVars(env); len(errs) > 0 {
		return nil, demoPrices, errs
	}
	plans, err := billing.PlansFromEnv(env)
	if err != nil {
		return nil, demoPrices, []error{planError(err)}
	}
	if _, ok := plans.ByTier(graceTier); !ok {
		return nil, demoPrices, []error{badVar(checkout.EnvVar(graceTier),
			"required when other PRICE_* variables are set: past_due subscribers keep the %s plan's limits (or set no PRICE_* variable for the demo plans)", graceTier)}
	}
	return plans, demoPrices, nil
}

// planEnviron returns environ as billing.PlansFromEnv is to read it:
// demo.Environ's (without empty variables, and with the demo plans when no
// PRICE_* variable is set), plus the example's limits, meters and features
// of the starter and pro tiers, when they are priced, for each PLAN_
// variable that is unset:
//
//	PLAN_STARTER_INCLUDED=1000  PLAN_STARTER_SOFT=800
//	PLAN_STARTER_TOKENS_INCLUDED=10000
//	PLAN_PRO_INCLUDED=10000     PLAN_PRO_SOFT=8000  PLAN_PRO_HARD=50000
//	PLAN_PRO_OVERAGE=true       when PRICE_PRO_METERED or PLAN_PRO_METER_EVENT is set
//	PLAN_PRO_TOKENS_INCLUDED=100000  PLAN_PRO_TOKENS_HARD=500000
//	PLAN_PRO_TOKENS_OVERAGE=true     when PLAN_PRO_TOKENS_METER_EVENT or PLAN_PRO_TOKENS_METERED_PRICE is set
//	PLAN_PRO_FEATURES=export
//
// (demo.Environ sets PLAN_PRO_TOKENS_METER_EVENT=api_tokens with the demo
// plans.) A variable the user set is never overridden.
func planEnviron(environ []string) (env []string, demoPrices bool) {
	env, demoPrices = demo.Environ(environ)
	set := make(map[string]bool, len(env))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		set[k] = true
	}
	proOverage := set["PRICE_PRO_METERED"] || set["PLAN_PRO_METER_EVENT"]
	proTokensOverage := set["PLAN_PRO_TOKENS_METER_EVENT"] || set["PLAN_PRO_TOKENS_METERED_PRICE"]
	for _, d := range []struct{ tier, name, value string }{
		{"STARTER", "INCLUDED", strconv.Itoa(starterIncluded)},
		{"STARTER", "SOFT", strconv.Itoa(starterSoft)},
		{"STARTER", "TOKENS_INCLUDED", strconv.Itoa(starterTokensIncluded)},
		{"PRO", "INCLUDED", strconv.Itoa(proIncluded)},
		{"PRO", "SOFT", strconv.Itoa(proSoft)},
		{"PRO", "HARD", strconv.Itoa(proHard)},
		{"PRO", "OVERAGE", strconv.FormatBool(proOverage)},
		{"PRO", "TOKENS_INCLUDED", strconv.Itoa(proTokensIncluded)},
		{"PRO", "TOKENS_HARD", strconv.Itoa(proTokensHard)},
		{"PRO", "TOKENS_OVERAGE", strconv.FormatBool(proTokensOverage)},
		{"PRO", "FEATURES", exportFeature},
	} {
		name := "PLAN_" + d.tier + "_" + d.name
		if set["PRICE_"+d.tier] && !set[name] {
			env = append(env, name+"="+d.value)
		}
	}
	return env, demoPrices
}

// meterRE is what Stripe accepts as a meter event name: at most 100
// characters.
var meterRE = regexp.MustCompile(`^[\x21-\x7e]{1,100}$`)

// checkPlanVars checks what billing.PlansFromEnv leaves to its caller: no
// PRICE_ or PLAN_ variable holds what looks like a secret put in the wrong
// variable (billing's errors may quote a value, and a meter event name is
// sent to Stripe), every meter event name is one Stripe accepts, and no
// metered price is set without its tier's price (which would otherwise be
// reported as no PRICE_<TIER> being set at all).
func checkPlanVars(env []string) []error {
	set := make(map[string]bool, len(env))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		set[k] = true
	}
	var errs []error
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		v = strings.TrimSpace(v)
		base, metered := strings.CutSuffix(k, checkout.EnvMeteredSuffix)
		switch {
		case !strings.HasPrefix(k, checkout.EnvPrefix) && !strings.HasPrefix(k, "PLAN_"):
		case looksSecret(v):
			errs = append(errs, badVar(k, "holds %s, not a plan's setting", shown(v)))
		case strings.HasPrefix(k, "PLAN_") && strings.HasSuffix(k, "_METER_EVENT") && !meterRE.MatchString(v):
			errs = append(errs, badVar(k, "want the event name of a Stripe billing meter such as %s (at most 100 characters, no spaces), got %s", demoMeterEvent, shown(v)))
		case strings.HasPrefix(k, checkout.EnvPrefix) && metered && !set[base]:
			errs = append(errs, badVar(k, "set only with %s (without any PRICE_* variable the demo plans have their own prices)", base))
		}
	}
	return errs
}

var (
	// planVarRE matches the variable that an error of
	// billing.PlansFromEnv names.
	planVarRE = regexp.MustCompile(`\b(PRICE|PLAN)_[A-Z0-9_]+`)
	// tierRE matches the tier that an error of checkout's catalog names
	// when two tiers' prices clash.
	tierRE = regexp.MustCompile(`tier "([^"]+)"`)
)

// planError returns err, an error of billing.PlansFromEnv, as a
// *[ConfigError]: billing names the variable at fault in the message (or,
// for prices that clash, the tier, whose PRICE_ variable is named then).
func planError(err error) error {
	msg := err.Error()
	for _, prefix := range []string{billing.ErrInvalidConfig.Error() + ": ", checkout.ErrInvalidConfig.Error() + ": "} {
		msg = strings.TrimPrefix(msg, prefix)
	}
	name := planVarRE.FindString(msg)
	if name == "" {
		name = checkout.EnvPrefix + "<TIER>"
		if m := tierRE.FindStringSubmatch(msg); m != nil {
			name = checkout.EnvVar(m[1])
		}
	}
	return &ConfigError{Var: name, Err: errors.New(strings.TrimPrefix(msg, name+": "))}
}
