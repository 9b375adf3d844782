package app

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/billing/usage"
	"github.com/billkit/billkit/checkout"
	"github.com/billkit/billkit/quota"
	"github.com/billkit/billkit/webhook"
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
// <TIER> stands for a tier's name in upper case, as in PRICE_PRO.
func envVars() []envVar {
	return []envVar{
		{"ADDR", defaultAddr, "listen address (host:port; port 0 picks a free port)"},
		{"REDIS_URL", "embedded miniredis", "redis://, rediss://, redis+sentinel:// or redis+cluster:// URL"},
		{"STRIPE_SECRET_KEY", "unset: checkout and portal answer 503", "Stripe secret key (sk_test_... or rk_test_...)"},
		{"STRIPE_API_BASE", "https://api.stripe.com", "Stripe API base URL, for example stripe-mock's http://localhost:12111"},
		{"STRIPE_WEBHOOK_SECRET", "generated and printed", "webhook signing secret(s), whsec_..., comma-separated during rotation"},
		{"PRICE_STARTER", demoPriceStarter + " with the demo plans", "Stripe price ID of the starter tier; required once any PRICE_* variable is set (the demo plans are then off), as past_due subscribers keep starter's limits"},
		{"PRICE_PRO", demoPricePro + " with the demo plans", "Stripe price ID of the pro tier"},
		{"PRICE_<TIER>", "none", "Stripe price ID of one more tier, <tier> in lower case; give it PLAN_<TIER>_INCLUDED or PLAN_<TIER>_OVERAGE"},
		{"PRICE_<TIER>_METERED", "none; PRICE_PRO_METERED is " + demoPriceProMetered + " with the demo plans", "optional metered price of a tier, added to its checkout: the meter's price with PLAN_<TIER>_METER_EVENT, else a legacy metered price that usage records are reported to (accounts pinned before 2025-03-31.basil)"},
		{"PLAN_<TIER>_METER_EVENT", "none; PLAN_PRO_METER_EVENT is " + demoMeterEvent + " with the demo plans", "event name of the billing meter a tier's usage is reported to, as meter events (the default model; at most 100 characters, no spaces); with the demo plans it replaces theirs"},
		{"PLAN_<TIER>_INCLUDED", fmt.Sprintf("starter %d, pro %d", starterIncluded, proIncluded), "units (requests) a tier's price includes per billing period"},
		{"PLAN_<TIER>_SOFT", fmt.Sprintf("starter %d, pro %d", starterSoft, proSoft), "soft limit: crossing it is logged, not denied (0: none)"},
		{"PLAN_<TIER>_HARD", fmt.Sprintf("pro %d; other tiers: INCLUDED", proHard), "units after which requests are denied (0: INCLUDED, or no cap with overage)"},
		{"PLAN_<TIER>_OVERAGE", "pro: true when PRICE_PRO_METERED or PLAN_PRO_METER_EVENT is set; other tiers: false", "true to allow and bill usage above INCLUDED (needs a meter event or a metered price)"},
		{"PLAN_<TIER>_INTERVAL", "month", "month or day: the counting period while no subscription period is known"},
		{"PLAN_<TIER>_BILL", "all", "all: report every counted unit; overage: only the units above INCLUDED"},
		{"PLAN_<TIER>_TOKENS_INCLUDED", fmt.Sprintf("starter %d, pro %d", starterTokensIncluded, proTokensIncluded), "tokens (of POST /v1/complete) a tier's price includes per billing period; a tier without it gets 402 there"},
		{"PLAN_<TIER>_TOKENS_HARD", fmt.Sprintf("pro %d; other tiers: TOKENS_INCLUDED", proTokensHard), "tokens after which completions are refused (0: TOKENS_INCLUDED, or no cap with overage)"},
		{"PLAN_<TIER>_TOKENS_OVERAGE", "pro: true when PLAN_PRO_TOKENS_METER_EVENT or PLAN_PRO_TOKENS_METERED_PRICE is set; other tiers: false", "true to allow and bill tokens above TOKENS_INCLUDED (needs a meter event or a metered price)"},
		{"PLAN_<TIER>_TOKENS_METER_EVENT", "none; PLAN_PRO_TOKENS_METER_EVENT is " + demoTokensMeterEvent + " with the demo plans", "event name of the billing meter a tier's tokens are reported to, as meter events; with the demo plans it replaces theirs"},
		{"PLAN_<TIER>_<METER>_METERED_PRICE", "none", "the metered price of a meter other than requests, such as PLAN_PRO_TOKENS_METERED_PRICE: the price of its billing meter, else a legacy price its usage records are reported to (checkout adds a plan's first metered price only)"},
		{"PLAN_<TIER>_<METER>_<FIELD>", "none", "any other field of a meter (SOFT, BILL, and every field of a meter other than requests and tokens): as the requests meter's PLAN_<TIER>_<FIELD>"},
		{"PLAN_<TIER>_FEATURES", "pro " + exportFeature, "a tier's features, comma-separated; export opens GET /v1/export; setting it replaces the default"},
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

	// Plans are the plans sold, with their Stripe prices and limits: the
	// one catalog that checkout sells from (billing.Plans is a
	// checkout.Catalog), the lifecycle maps subscriptions to, and the
	// usage reporter bills by. It has the tier graceTier.
	Plans *billing.Plans
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

	// Routes are extra routes mounted on the server's mux next to its own,
	// such as /metrics: each key is an [http.ServeMux] pattern, served by
	// its handler with neither API-key authentication nor the quota
	// middleware in front. A pattern that collides with one of the
	// server's own (or is invalid, or has a nil handler) is a
	// configuration error of [NewApp]. ConfigFromEnv leaves it nil: no
	// extra route.
	Routes map[string]http.Handler
	// Observe holds the observation hooks handed to the server's
	// components, for metrics and traces (see the module
	// github.com/billkit/billkit/otel). ConfigFromEnv leaves it zero:
	// nothing is observed.
	Observe Observers
}

// Observers are the observation hooks of the server's components. Every
// field is optional.
type Observers struct {
	Quota    quota.Observer    // both quota middlewares (/v1/ and /v1/complete)
	Webhook  webhook.Observer  // the webhook endpoint
	Billing  billing.Observer  // the entitlement lifecycle
	Usage    usage.Observer    // the usage reporter
	Checkout checkout.Observer // the checkout and portal endpoints
	// StripeBackend, when set, wraps the backend of the Stripe client's
	// API calls, for example to trace and count them.
	StripeBackend func(stripe.Backend) stripe.Backend
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
	subjectRE = regexp.MustCompile(`^[A-Za-z0-9_.@-]{1,128}$`)
	apiKeyRE  = regexp.MustCompile(`^[\x21-\x7e]{16,256}$`)
)

// ConfigFromEnv reads the configuration from environ, a list of
// "KEY=value" entries as returned by [os.Environ], generating a webhook
// secret and an API key when none is configured. A variable set to an
// empty value counts as unset. The plans come from billing.PlansFromEnv
// (see [readPlans]). Every error is a *[ConfigError] naming the offending
// variable; values of secrets are never part of an error.
func ConfigFromEnv(environ []string) (Config, error) {
	vars := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			if _, dup := vars[k]; !dup { // the first one counts, as for os.Getenv
				vars[k] = v
			}
		}
	}
	get := func(name string) string { return strings.TrimSpace(vars[name]) }
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

	plans, demoPrices, planErrs := readPlans(environ)
	c.Plans, c.DemoPrices = plans, demoPrices
	errs = append(errs, planErrs...)

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
