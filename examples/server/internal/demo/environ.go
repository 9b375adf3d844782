package demo

import (
	"strings"

	"github.com/billkit/billkit/checkout"
)

// Event names of the billing meters that the demo pro plan bills its usage
// under, as meter events: MeterEvent its requests, TokensMeterEvent its
// tokens.
const (
	MeterEvent       = "api_requests"
	TokensMeterEvent = "api_tokens"
)

// Environ returns environ, a list of "KEY=value" entries as [os.Environ]
// returns them, as billing.PlansFromEnv and checkout.PricesFromEnviron are
// to read it: without the entries whose value is empty or blank (an empty
// variable counts as unset), and, when no PRICE_ variable is left, with
// the demo plans' variables added: PRICE_STARTER, PRICE_PRO,
// PRICE_PRO_METERED and, unless they are set, PLAN_PRO_METER_EVENT and
// PLAN_PRO_TOKENS_METER_EVENT (so that a meter event name set with the demo
// plans replaces theirs). demo reports
// whether the demo prices were added. environ itself is not modified.
func Environ(environ []string) (env []string, demo bool) {
	env = make([]string, 0, len(environ)+5)
	set := make(map[string]bool, len(environ))
	priced := false
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		if strings.TrimSpace(v) == "" {
			continue
		}
		env = append(env, kv)
		set[k] = true
		priced = priced || strings.HasPrefix(k, checkout.EnvPrefix)
	}
	if priced {
		return env, false
	}
	env = append(env, "PRICE_STARTER="+PriceStarter, "PRICE_PRO="+PricePro, "PRICE_PRO_METERED="+PriceProMetered)
	if !set["PLAN_PRO_METER_EVENT"] {
		env = append(env, "PLAN_PRO_METER_EVENT="+MeterEvent)
	}
	if !set["PLAN_PRO_TOKENS_METER_EVENT"] {
		env = append(env, "PLAN_PRO_TOKENS_METER_EVENT="+TokensMeterEvent)
	}
	return env, true
}
