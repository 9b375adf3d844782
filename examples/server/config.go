package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/examples/server/internal/demo"
)

// Demo price IDs, used when no PRICE_* variable is set so that the whole
// subscription lifecycle can be walked offline with send-event. They are
// well-formed but exist in no Stripe account: Checkout against real Stripe
// needs PRICE_STARTER and PRICE_PRO.
const (
	demoPriceStarter    = demo.PriceStarter    // price_1DemoStarter0000000000
	demoPricePro        = demo.PricePro        // price_1DemoPro00000000000000
	demoPriceProMetered = demo.PriceProMetered // price_1DemoProMetered000000
)

// demoMeterEvent is the event name of the billing meter that the demo pro
// plan bills its usage under, as meter events.
const demoMeterEvent = "api_requests"

// Limits of the example's plans, per billing period.
const (
	starterIncluded = 1_000
	starterSoft     = 800
	proIncluded     = 10_000
	proSoft         = 8_000
	proHard         = 50_000 // with a metered price: 40,000 units of overage at most
)

// Defaults of the configuration.
const (
	defaultAddr              = ":8080"
	defaultReportInterval    = time.Minute
	defaultReconcileInterval = time.Hour
	demoSubject              = "demo"
)

// envVar documents one environment variable the server reads.
type envVar struct {
	Name, Default, Help string
}

// envVars lists every variable the server reads, for -h and the README.
func envVars() []envVar {
	return []envVar{
		{"ADDR", defaultAddr, "listen address (host:port; port 0 picks a free port)"},
		{"REDIS_URL", "embedded miniredis", "redis://, rediss://, redis+sentinel:// or redis+cluster:// URL"},
		{"STRIPE_SECRET_KEY", "unset: checkout and portal answer 503", "Stripe secret key (sk_test_... or rk_test_...)"},
		{"STRIPE_API_BASE", "https://api.stripe.com", "Stripe API base URL, for example stripe-mock's http://localhost:12111"},
		{"STRIPE_WEBHOOK_SECRET", "generated and printed", "webhook signing secret(s), whsec_..., comma-separated during rotation"},
		{"PRICE_STARTER", demoPriceStarter, "Stripe price ID of the starter tier"},
		{"PRICE_PRO", demoPricePro, "Stripe price ID of the pro tier"},
		{"PLAN_STARTER_METER_EVENT", "none", "event name of the billing meter the starter tier's usage is reported to, as meter events"},
		{"PLAN_PRO_METER_EVENT", demoMeterEvent + " with the demo plans", "event name of the billing meter the pro tier's usage is reported to, as meter events (the default model); pro may then exceed its included units"},
		{"PRICE_STARTER_METERED", "none", "optional metered price of the starter tier, added to its checkout: the meter's price with PLAN_STARTER_METER_EVENT, else a legacy metered price that usage records are reported to"},
		{"PRICE_PRO_METERED", demoPriceProMetered + " with the demo plans", "optional metered price of the pro tier, added to its checkout: the meter's price with PLAN_PRO_METER_EVENT, else a legacy metered price that usage records are reported to (accounts pinned before 2025-03-31.basil)"},
		{"PUBLIC_URL", "http://localhost:PORT", "the server's public base URL, for Checkout's success and cancel pages"},
		{"API_KEYS", "one random key for subject \"demo\", printed", "key:subject pairs, comma-separated"},
		{"USAGE_REPORT_INTERVAL", defaultReportInterval.String(), "how often usage is reported to Stripe (Go duration)"},
		{"RECONCILE_INTERVAL", "1h", "how often entitlements are reconciled with Stripe's subscriptions, the first time at start (Go duration); without STRIPE_SECRET_KEY, how often events parked for unlinked customers are swept"},
	}
}

// Config is the server's configuration, read from the environment by
// [ConfigFromEnv]. Its zero value is not valid; use ConfigFromEnv or fill
// every field.
type Config struct {
	// Addr is the listen address.
	Addr string
	// RedisURL is the Redis URL; empty means an embedded miniredis.
	RedisURL string

	// StripeSecretKey is the Stripe API key; empty disables checkout,
	// portal and usage reporting.
	StripeSecretKey string
	// StripeAPIBase overrides the Stripe API base URL (stripe-mock).
	StripeAPIBase string

	// WebhookSecrets are the accepted webhook signing secrets, the first
	// being the current one.
	WebhookSecrets []string
	// WebhookSecretGenerated reports that WebhookSecrets[0] was generated.
	WebhookSecretGenerated bool

	// Plans are the plans sold, with their Stripe prices and limits.
	Plans []billing.Plan
	// DemoPrices reports that the plans carry the built-in demo price IDs.
	DemoPrices bool
	// PublicURL is the server's public base URL, without a trailing slash.
	PublicURL string

	// APIKeys maps each API key to the subject it authenticates.
	APIKeys map[string]string
	// APIKeyGenerated reports that APIKeys holds one generated key.
	APIKeyGenerated bool

	// ReportInterval is the usage reporter's interval.
	ReportInterval time.Duration
	// ReconcileInterval is the time between two reconciliations of the
	// entitlements with Stripe (billing.Config.ReconcileEvery).
	ReconcileInterval time.Duration
}

// tierPrice names a tier, the variables that hold its price and its meter
// event name, and its demo price, metered price and meter event name.
type tierPrice struct {
	Tier, Env, MeterEnv                   string
	Demo, DemoMetered, DemoMeterEventName string
}

// tiers lists the tiers of the example, in order. The variables follow
// billing.PlansFromEnv's names (PRICE_<TIER>, PRICE_<TIER>_METERED,
// PLAN_<TIER>_METER_EVENT).
func tiers() []tierPrice {
	return []tierPrice{
		{"starter", "PRICE_STARTER", "PLAN_STARTER_METER_EVENT", demoPriceStarter, "", ""},
		{"pro", "PRICE_PRO", "PLAN_PRO_METER_EVENT", demoPricePro, demoPriceProMetered, demoMeterEvent},
	}
}

// plans returns the example's plans for the given prices, metered prices
// and meter event names (by tier). A tier with a meter event name reports
// its usage as meter events under it (Billing Meters, the default); one
// with only a metered price reports usage records to that price's
// subscription item (legacy metered prices, for accounts pinned before
// 2025-03-31.basil). Pro with either also allows overage up to its hard
// limit.
func plans(prices, metered, meterEvents map[string]string) []billing.Plan {
	return []billing.Plan{{
		Tier:           "starter",
		PriceID:        prices["starter"],
		MeteredPriceID: metered["starter"],
		MeterEventName: meterEvents["starter"],
		Included:       starterIncluded,
		Soft:           starterSoft,
	}, {
		Tier:           "pro",
		PriceID:        prices["pro"],
		MeteredPriceID: metered["pro"],
		MeterEventName: meterEvents["pro"],
		Included:       proIncluded,
		Soft:           proSoft,
		Hard:           proHard,
		Overage:        metered["pro"] != "" || meterEvents["pro"] != "",
	}}
}

// ConfigError is a configuration error that names the variable at fault.
type ConfigError struct {
	Var string
	Err error
}

func (e *ConfigError) Error() string { return e.Var + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

func badVar(name, format string, args ...any) error {
	return &ConfigError{Var: name, Err: fmt.Errorf(format, args...)}
}

var (
	priceRE   = regexp.MustCompile(`^price_[A-Za-z0-9_]{1,249}$`)
	meterRE   = regexp.MustCompile(`^[\x21-\x7e]{1,100}$`) // Stripe: at most 100 characters
	subjectRE = regexp.MustCompile(`^[A-Za-z0-9_.@-]{1,128}$`)
	apiKeyRE  = regexp.MustCompile(`^[\x21-\x7e]{16,256}$`)
)

// ConfigFromEnv reads the configuration from getenv, generating a webhook
// secret and an API key when none is configured. Every error is a
// *[ConfigError] naming the offending variable; values of secrets are never
// part of an error.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	get := func(name string) string { return strings.TrimSpace(getenv(name)) }
	c := Config{
		Addr:              defaultAddr,
		RedisURL:          get("REDIS_URL"),
		ReportInterval:    defaultReportInterval,
		ReconcileInterval: defaultReconcileInterval,
	}
	var errs []error

	if v := get("ADDR"); v != "" {
		c.Addr = v
	}
	if _, port, err := net.SplitHostPort(c.Addr); err != nil || port == "" {
		errs = append(errs, badVar("ADDR", "want host:port such as :8080 or 127.0.0.1:0, got %q", c.Addr))
	}

	if c.RedisURL != "" {
		if _, err := redisOptions(c.RedisURL); err != nil {
			// The URL may hold a password: name the variable, not the value.
			errs = append(errs, &ConfigError{Var: "REDIS_URL", Err: err})
		}
	}

	c.StripeSecretKey = get("STRIPE_SECRET_KEY")
	if k := c.StripeSecretKey; k != "" && !strings.HasPrefix(k, "sk_") && !strings.HasPrefix(k, "rk_") {
		errs = append(errs, badVar("STRIPE_SECRET_KEY", "want a secret key starting with sk_ or rk_ (the publishable pk_ key does not work here)"))
	}
	c.StripeAPIBase = get("STRIPE_API_BASE")
	if b := c.StripeAPIBase; b != "" {
		u, err := url.Parse(b)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, badVar("STRIPE_API_BASE", "want an http:// or https:// URL such as http://localhost:12111, got %s", shown(b)))
		}
	}

	if v := get("STRIPE_WEBHOOK_SECRET"); v != "" {
		for _, s := range strings.Split(v, ",") {
			s = strings.TrimSpace(s)
			if !strings.HasPrefix(s, "whsec_") || len(s) <= len("whsec_") {
				errs = append(errs, badVar("STRIPE_WEBHOOK_SECRET", "want whsec_... (comma-separated during rotation)"))
				break
			}
			c.WebhookSecrets = append(c.WebhookSecrets, s)
		}
	} else {
		c.WebhookSecrets = []string{"whsec_" + randomHex(24)}
		c.WebhookSecretGenerated = true
	}

	prices, metered, meterEvents := map[string]string{}, map[string]string{}, map[string]string{}
	var set, unset []string
	for _, t := range tiers() {
		// A meter event name is no price: it may be set with the demo
		// plans too, replacing theirs.
		if v := get(t.MeterEnv); v != "" {
			if !meterRE.MatchString(v) || looksSecret(v) {
				errs = append(errs, badVar(t.MeterEnv, "want the event name of a Stripe billing meter such as %s (at most 100 characters, no spaces), got %s", demoMeterEvent, shown(v)))
			}
			meterEvents[t.Tier] = v
		}
		if v := get(t.Env); v != "" {
			set = append(set, t.Env)
			if !priceRE.MatchString(v) {
				errs = append(errs, badVar(t.Env, "want a Stripe price ID such as price_1Nx..., got %s", shown(v)))
			}
			prices[t.Tier] = v
		} else {
			unset = append(unset, t.Env)
		}
		if v := get(t.Env + "_METERED"); v != "" {
			if !priceRE.MatchString(v) || v == prices[t.Tier] {
				errs = append(errs, badVar(t.Env+"_METERED", "want the Stripe price ID of a metered price, other than %s, got %s", t.Env, shown(v)))
			}
			metered[t.Tier] = v
		}
	}
	switch {
	case len(set) == 0 && len(metered) > 0:
		for _, t := range tiers() {
			if metered[t.Tier] != "" {
				errs = append(errs, badVar(t.Env+"_METERED", "set only with %s (the demo plans have their own prices)", t.Env))
			}
		}
	case len(set) == 0:
		for _, t := range tiers() {
			prices[t.Tier] = t.Demo
			if t.DemoMetered != "" {
				metered[t.Tier] = t.DemoMetered
			}
			if t.DemoMeterEventName != "" && meterEvents[t.Tier] == "" {
				meterEvents[t.Tier] = t.DemoMeterEventName
			}
		}
		c.DemoPrices = true
	case len(unset) > 0:
		for _, name := range unset {
			errs = append(errs, badVar(name, "required when %s is set (set every PRICE_* variable, or none for the demo plans)", strings.Join(set, ", ")))
		}
	}
	c.Plans = plans(prices, metered, meterEvents)

	c.PublicURL = strings.TrimSuffix(get("PUBLIC_URL"), "/")
	if c.PublicURL == "" {
		port := "8080"
		if _, p, err := net.SplitHostPort(c.Addr); err == nil && p != "0" && p != "" {
			port = p
		}
		c.PublicURL = "http://localhost:" + port
	} else if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, badVar("PUBLIC_URL", "want an absolute http:// or https:// URL, got %s", shown(c.PublicURL)))
	}

	if v := get("API_KEYS"); v != "" {
		keys, err := parseAPIKeys(v)
		if err != nil {
			errs = append(errs, &ConfigError{Var: "API_KEYS", Err: err})
		}
		c.APIKeys = keys
	} else {
		c.APIKeys = map[string]string{"demo_" + randomHex(16): demoSubject}
		c.APIKeyGenerated = true
	}

	if v := get("USAGE_REPORT_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			errs = append(errs, badVar("USAGE_REPORT_INTERVAL", "want a positive Go duration such as 30s or 5m, got %q", v))
		}
		c.ReportInterval = d
	}
	if v := get("RECONCILE_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			errs = append(errs, badVar("RECONCILE_INTERVAL", "want a positive Go duration such as 15m or 1h, got %q", v))
		}
		c.ReconcileInterval = d
	}

	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	return c, nil
}

// parseAPIKeys parses "key1:subject1,key2:subject2". Keys are never echoed
// in errors.
func parseAPIKeys(v string) (map[string]string, error) {
	keys := make(map[string]string)
	for i, pair := range strings.Split(v, ",") {
		key, subject, ok := strings.Cut(strings.TrimSpace(pair), ":")
		switch {
		case !ok:
			return nil, fmt.Errorf("entry %d: want key:subject", i+1)
		case !apiKeyRE.MatchString(key):
			return nil, fmt.Errorf("entry %d: a key must be 16 to 256 printable characters without spaces", i+1)
		case !subjectRE.MatchString(subject):
			return nil, fmt.Errorf("entry %d: subject %q must be 1 to 128 of A-Z a-z 0-9 _ . @ -", i+1, subject)
		}
		if _, dup := keys[key]; dup {
			return nil, fmt.Errorf("entry %d: duplicate key", i+1)
		}
		keys[key] = subject
	}
	return keys, nil
}

// shown returns v quoted for an error message, unless it looks like a
// secret put in the wrong variable (a Stripe key, a webhook secret, a URL
// with a password), which is never echoed.
func shown(v string) string {
	for _, p := range secretPrefixes {
		if strings.HasPrefix(v, p) {
			return "a " + p + "... secret (not shown)"
		}
	}
	if u, err := url.Parse(v); err == nil && u.User != nil {
		return "a URL with credentials (not shown)"
	}
	if strings.Contains(v, "@") {
		return "a value with credentials (not shown)"
	}
	return strconv.Quote(v)
}

// secretPrefixes start the secrets the server knows: Stripe secret and
// restricted keys, webhook signing secrets.
var secretPrefixes = []string{"sk_", "rk_", "whsec_"}

// looksSecret reports whether v looks like a secret (see [shown]), so that
// a value sent to Stripe as a name is never one put in the wrong variable.
func looksSecret(v string) bool { return shown(v) != strconv.Quote(v) }

// randomHex returns n random bytes, hex-encoded.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails since Go 1.24
	return hex.EncodeToString(b)
}
