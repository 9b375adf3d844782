package app

import (
	"errors"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/checkout"
	"github.com/billkit/billkit/quota"
)

// env returns m as a list of "KEY=value" entries, as os.Environ returns
// them.
func env(m map[string]string) []string {
	environ := make([]string, 0, len(m))
	for k, v := range m {
		environ = append(environ, k+"="+v)
	}
	sort.Strings(environ)
	return environ
}

// starterPro returns c's starter and pro plans; it fails t when c lacks
// one.
func starterPro(t *testing.T, c Config) (starter, pro billing.Plan) {
	t.Helper()
	starter, ok := c.Plans.ByTier("starter")
	if !ok {
		t.Fatalf("no starter plan in %v", c.Plans.Tiers())
	}
	pro, ok = c.Plans.ByTier("pro")
	if !ok {
		t.Fatalf("no pro plan in %v", c.Plans.Tiers())
	}
	return starter, pro
}

// meterOf returns p's meter called name (billing.Plan.AllMeters), or the
// zero Meter when p has none.
func meterOf(p billing.Plan, name string) billing.Meter {
	for _, m := range p.AllMeters() {
		if m.Name == name {
			return m
		}
	}
	return billing.Meter{}
}

func TestConfigFromEnvDefaults(t *testing.T) {
	t.Parallel()
	c, err := ConfigFromEnv(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != ":8080" {
		t.Errorf("Addr = %q, want :8080", c.Addr)
	}
	if c.RedisURL != "" || c.StripeSecretKey != "" || c.StripeAPIBase != "" {
		t.Errorf("unexpected values: %+v", c)
	}
	if !c.WebhookSecretGenerated || len(c.WebhookSecrets) != 1 || !strings.HasPrefix(c.WebhookSecrets[0], "whsec_") {
		t.Errorf("webhook secret not generated: %v %q", c.WebhookSecretGenerated, c.WebhookSecrets)
	}
	starter, pro := starterPro(t, c)
	if got := strings.Join(c.Plans.Tiers(), ","); !c.DemoPrices || got != "pro,starter" {
		t.Errorf("demo plans not used: %v, tiers %s", c.DemoPrices, got)
	}
	// Both plans have requests and tokens. The demo pro plan bills both
	// through billing meters, requests with their metered price, and has
	// the export feature; starter bills nothing and has no feature.
	wantStarter := billing.Plan{Tier: "starter", PriceID: demoPriceStarter, Meters: []billing.Meter{
		{Name: quota.DefaultMeter, Included: starterIncluded, Soft: starterSoft},
		{Name: tokensMeter, Included: starterTokensIncluded},
	}}
	wantPro := billing.Plan{Tier: "pro", PriceID: demoPricePro, Meters: []billing.Meter{
		{Name: quota.DefaultMeter, MeteredPriceID: demoPriceProMetered, MeterEventName: demoMeterEvent,
			Included: proIncluded, Soft: proSoft, Hard: proHard, Overage: true},
		{Name: tokensMeter, MeterEventName: demoTokensMeterEvent, Included: proTokensIncluded, Hard: proTokensHard, Overage: true},
	}, Features: []string{exportFeature}}
	if !reflect.DeepEqual(starter, wantStarter) || !reflect.DeepEqual(pro, wantPro) {
		t.Errorf("demo plans\n%+v\n%+v\nwant\n%+v\n%+v", starter, pro, wantStarter, wantPro)
	}
	if c.PublicURL != "http://localhost:8080" {
		t.Errorf("PublicURL = %q", c.PublicURL)
	}
	if !c.APIKeyGenerated || len(c.APIKeys) != 1 {
		t.Fatalf("api key not generated: %v %v", c.APIKeyGenerated, len(c.APIKeys))
	}
	for k, s := range c.APIKeys {
		if s != "demo" || len(k) < 16 {
			t.Errorf("generated key for %q has length %d", s, len(k))
		}
	}
	if c.ReportInterval != time.Minute {
		t.Errorf("ReportInterval = %v", c.ReportInterval)
	}
	if c.ReconcileInterval != time.Hour {
		t.Errorf("ReconcileInterval = %v, want 1h", c.ReconcileInterval)
	}
	// Generated values differ between runs.
	c2, _ := ConfigFromEnv(env(nil))
	if c2.WebhookSecrets[0] == c.WebhookSecrets[0] {
		t.Error("two runs generated the same webhook secret")
	}
}

func TestConfigFromEnvSet(t *testing.T) {
	t.Parallel()
	c, err := ConfigFromEnv(env(map[string]string{
		"ADDR":                  "127.0.0.1:0",
		"REDIS_URL":             "redis://:pw@localhost:6379/2",
		"STRIPE_SECRET_KEY":     "sk_test_123",
		"STRIPE_API_BASE":       "http://localhost:12111",
		"STRIPE_WEBHOOK_SECRET": "whsec_new, whsec_old",
		"PRICE_STARTER":         "price_A",
		"PRICE_PRO":             "price_B",
		"PRICE_PRO_METERED":     "price_BM",
		"PUBLIC_URL":            "https://api.example.com/",
		"API_KEYS":              "key-aaaaaaaaaaaaaaaa:alice, key-bbbbbbbbbbbbbbbb:bob@example.com",
		"USAGE_REPORT_INTERVAL": "10s",
		"RECONCILE_INTERVAL":    "15m",
		"PLAN_PRO_METER_EVENT":  "pro_requests",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "127.0.0.1:0" || c.StripeSecretKey != "sk_test_123" || c.StripeAPIBase != "http://localhost:12111" {
		t.Errorf("got %+v", c)
	}
	if got := strings.Join(c.WebhookSecrets, ","); got != "whsec_new,whsec_old" || c.WebhookSecretGenerated {
		t.Errorf("WebhookSecrets = %q (generated %v)", got, c.WebhookSecretGenerated)
	}
	starter, pro := starterPro(t, c)
	sr, pr, pt := meterOf(starter, quota.DefaultMeter), meterOf(pro, quota.DefaultMeter), meterOf(pro, tokensMeter)
	if c.DemoPrices || starter.PriceID != "price_A" || pro.PriceID != "price_B" ||
		sr.MeteredPriceID != "" || pr.MeteredPriceID != "price_BM" || !pr.Overage ||
		sr.MeterEventName != "" || pr.MeterEventName != "pro_requests" {
		t.Errorf("plans %+v %+v (demo %v)", starter, pro, c.DemoPrices)
	}
	// Own prices: pro's tokens are capped at what it includes, as nothing
	// bills their overage.
	if pt.Included != proTokensIncluded || pt.Overage || pt.MeterEventName != "" ||
		pro.Limits(tokensMeter, quota.Period{}).Limit() != proTokensIncluded {
		t.Errorf("pro's tokens %+v, want %d included without overage", pt, proTokensIncluded)
	}
	if c.PublicURL != "https://api.example.com" {
		t.Errorf("PublicURL = %q", c.PublicURL)
	}
	if c.APIKeyGenerated || c.APIKeys["key-aaaaaaaaaaaaaaaa"] != "alice" || c.APIKeys["key-bbbbbbbbbbbbbbbb"] != "bob@example.com" {
		t.Errorf("APIKeys = %v", c.APIKeys)
	}
	if c.ReportInterval != 10*time.Second {
		t.Errorf("ReportInterval = %v", c.ReportInterval)
	}
	if c.ReconcileInterval != 15*time.Minute {
		t.Errorf("ReconcileInterval = %v", c.ReconcileInterval)
	}
}

// TestConfigBillingModel checks which billing model each tier's
// variables choose: meter events with a meter event name (the default of
// the demo plans), usage records with only a metered price, nothing with
// neither.
func TestConfigBillingModel(t *testing.T) {
	t.Parallel()
	own := func(kv ...string) map[string]string {
		m := map[string]string{"PRICE_STARTER": "price_S", "PRICE_PRO": "price_P"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name                      string
		env                       map[string]string
		proMeterEvent, proMetered string
		proOverage                bool
		starterMeterEvent         string
		billing, starterBilling   string
	}{
		{"demo plans", nil, demoMeterEvent, demoPriceProMetered, true, "", "meter events", "none"},
		{"demo plans, own meter", map[string]string{"PLAN_PRO_METER_EVENT": "calls", "PLAN_STARTER_METER_EVENT": "starter_calls"},
			"calls", demoPriceProMetered, true, "starter_calls", "meter events", "meter events"},
		{"own prices, meter and its price", own("PRICE_PRO_METERED", "price_PM", "PLAN_PRO_METER_EVENT", "api_requests"),
			"api_requests", "price_PM", true, "", "meter events", "none"},
		{"own prices, meter only", own("PLAN_PRO_METER_EVENT", "api_requests"), "api_requests", "", true, "", "meter events", "none"},
		{"own prices, pinned account", own("PRICE_PRO_METERED", "price_PM"), "", "price_PM", true, "", "usage records", "none"},
		{"own prices, nothing metered", own(), "", "", false, "", "none", "none"},
	}
	model := func(p billing.Plan) string {
		switch m := meterOf(p, quota.DefaultMeter); {
		case m.MeterEventName != "":
			return "meter events" // wins when both are set
		case m.MeteredPriceID != "":
			return "usage records"
		}
		return "none"
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := ConfigFromEnv(env(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			starter, pro := starterPro(t, c)
			sr, pr := meterOf(starter, quota.DefaultMeter), meterOf(pro, quota.DefaultMeter)
			if pr.MeterEventName != tt.proMeterEvent || pr.MeteredPriceID != tt.proMetered || pr.Overage != tt.proOverage ||
				sr.MeterEventName != tt.starterMeterEvent {
				t.Errorf("plans %+v %+v", starter, pro)
			}
			if got := model(pro); got != tt.billing {
				t.Errorf("pro bills %s, want %s", got, tt.billing)
			}
			if got := model(starter); got != tt.starterBilling {
				t.Errorf("starter bills %s, want %s", got, tt.starterBilling)
			}
		})
	}
}

// TestConfigPlans checks how the PRICE_* and PLAN_* variables, read by
// billing.PlansFromEnv, combine with the example's defaults: the demo
// plans without any PRICE_* variable, the starter and pro limits unless
// set, and any further tier.
func TestConfigPlans(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		env   map[string]string
		demo  bool
		tiers string
		check func(t *testing.T, plans *billing.Plans)
	}{
		{"empty variables are unset", map[string]string{"PRICE_STARTER": "", "PRICE_PRO": " ", "PLAN_PRO_INCLUDED": ""}, true, "pro,starter",
			func(t *testing.T, plans *billing.Plans) {
				if pro, _ := plans.ByTier("pro"); meterOf(pro, quota.DefaultMeter).Included != proIncluded {
					t.Errorf("pro %+v, want %d requests included", pro, proIncluded)
				}
			}},
		{"starter only", map[string]string{"PRICE_STARTER": "price_S"}, false, "starter",
			func(t *testing.T, plans *billing.Plans) {
				want := billing.Plan{Tier: "starter", PriceID: "price_S", Meters: []billing.Meter{
					{Name: quota.DefaultMeter, Included: starterIncluded, Soft: starterSoft},
					{Name: tokensMeter, Included: starterTokensIncluded},
				}}
				if got, _ := plans.ByTier("starter"); !reflect.DeepEqual(got, want) {
					t.Errorf("starter %+v, want %+v", got, want)
				}
			}},
		{"one more tier", map[string]string{"PRICE_STARTER": "price_S", "PRICE_PRO": "price_P",
			"PRICE_ENTERPRISE": "price_E", "PRICE_ENTERPRISE_METERED": "price_EM", "PLAN_ENTERPRISE_INCLUDED": "1000000",
			"PLAN_ENTERPRISE_OVERAGE": "true", "PLAN_ENTERPRISE_METER_EVENT": "enterprise_requests", "PLAN_ENTERPRISE_INTERVAL": "day", "PLAN_ENTERPRISE_BILL": "overage"},
			false, "enterprise,pro,starter",
			func(t *testing.T, plans *billing.Plans) {
				want := billing.Plan{Tier: "enterprise", PriceID: "price_E", MeteredPriceID: "price_EM", MeterEventName: "enterprise_requests",
					Included: 1_000_000, Overage: true, OverageOnly: true, Interval: quota.Day}
				if got, _ := plans.ByTier("enterprise"); !reflect.DeepEqual(got, want) {
					t.Errorf("enterprise %+v, want %+v", got, want)
				}
				// Checkout sells what the plans declare.
				var catalog checkout.Catalog = plans
				if tier, ok := catalog.Tier("enterprise"); !ok || tier.PriceID != "price_E" || tier.MeteredPriceID != "price_EM" {
					t.Errorf("checkout's enterprise tier %+v, %v", tier, ok)
				}
			}},
		{"the demo plans with own limits", map[string]string{"PLAN_PRO_INCLUDED": "20000", "PLAN_PRO_HARD": "0", "PLAN_PRO_BILL": "overage", "PLAN_STARTER_SOFT": "0"},
			true, "pro,starter",
			func(t *testing.T, plans *billing.Plans) {
				starter, _ := plans.ByTier("starter")
				pro, _ := plans.ByTier("pro")
				sr, pr := meterOf(starter, quota.DefaultMeter), meterOf(pro, quota.DefaultMeter)
				if pr.Included != 20000 || pr.Hard != 0 || !pr.Overage || !pr.OverageOnly || sr.Soft != 0 || sr.Included != starterIncluded {
					t.Errorf("plans %+v %+v", starter, pro)
				}
			}},
		{"the demo plans without overage", map[string]string{"PLAN_PRO_OVERAGE": "false"}, true, "pro,starter",
			func(t *testing.T, plans *billing.Plans) {
				if pro, _ := plans.ByTier("pro"); meterOf(pro, quota.DefaultMeter).Overage || meterOf(pro, quota.DefaultMeter).MeterEventName != demoMeterEvent ||
					pro.Limits(quota.DefaultMeter, quota.Period{}).Limit() != proIncluded {
					t.Errorf("pro %+v, want no overage of requests, capped at %d", pro, proIncluded)
				}
			}},
		{"the demo plans with own meters and features", map[string]string{"PLAN_PRO_TOKENS_INCLUDED": "500", "PLAN_PRO_TOKENS_HARD": "800",
			"PLAN_PRO_TOKENS_METER_EVENT": "words", "PLAN_PRO_FEATURES": "export,sso", "PLAN_STARTER_IMAGES_INCLUDED": "10"}, true, "pro,starter",
			func(t *testing.T, plans *billing.Plans) {
				starter, _ := plans.ByTier("starter")
				pro, _ := plans.ByTier("pro")
				want := billing.Meter{Name: tokensMeter, Included: 500, Hard: 800, Overage: true, MeterEventName: "words"}
				if got := meterOf(pro, tokensMeter); got != want {
					t.Errorf("pro's tokens %+v, want %+v", got, want)
				}
				if !reflect.DeepEqual(pro.Features, []string{"export", "sso"}) {
					t.Errorf("pro's features %q, want export and sso", pro.Features)
				}
				if got := len(starter.AllMeters()); got != 3 || meterOf(starter, "images").Included != 10 || meterOf(starter, tokensMeter).Included != starterTokensIncluded {
					t.Errorf("starter %+v, want requests, 10 images and %d tokens", starter, starterTokensIncluded)
				}
			}},
		{"own prices with a metered price of tokens", map[string]string{"PRICE_STARTER": "price_S", "PRICE_PRO": "price_P", "PLAN_PRO_TOKENS_METERED_PRICE": "price_PT"},
			false, "pro,starter",
			func(t *testing.T, plans *billing.Plans) {
				pro, _ := plans.ByTier("pro")
				want := billing.Meter{Name: tokensMeter, Included: proTokensIncluded, Hard: proTokensHard, Overage: true, MeteredPriceID: "price_PT"}
				if got := meterOf(pro, tokensMeter); got != want {
					t.Errorf("pro's tokens %+v, want %+v", got, want)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := ConfigFromEnv(env(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(c.Plans.Tiers(), ","); c.DemoPrices != tt.demo || got != tt.tiers {
				t.Errorf("tiers %s (demo %v), want %s (demo %v)", got, c.DemoPrices, tt.tiers, tt.demo)
			}
			tt.check(t, c.Plans)
		})
	}
}

func TestConfigFromEnvInvalid(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-value"
	tests := []struct {
		name, variable string
		env            map[string]string
	}{
		{"addr without port", "ADDR", map[string]string{"ADDR": "localhost"}},
		{"addr empty port", "ADDR", map[string]string{"ADDR": "localhost:"}},
		{"redis bad scheme", "REDIS_URL", map[string]string{"REDIS_URL": "http://localhost:6379"}},
		{"redis not a url", "REDIS_URL", map[string]string{"REDIS_URL": "localhost:6379"}},
		{"redis bad db", "REDIS_URL", map[string]string{"REDIS_URL": "redis://:" + secret + "@localhost:6379/x"}},
		{"redis bad escape", "REDIS_URL", map[string]string{"REDIS_URL": "redis://:" + secret + "@localhost:6379/%zz"}},
		{"redis unknown option", "REDIS_URL", map[string]string{"REDIS_URL": "redis://localhost:6379?nope=1"}},
		{"redis sentinel without master", "REDIS_URL", map[string]string{"REDIS_URL": "redis+sentinel://localhost:26379"}},
		{"redis unknown kind", "REDIS_URL", map[string]string{"REDIS_URL": "redis+ring://localhost:6379"}},
		{"publishable key", "STRIPE_SECRET_KEY", map[string]string{"STRIPE_SECRET_KEY": "pk_test_" + secret}},
		{"garbage key", "STRIPE_SECRET_KEY", map[string]string{"STRIPE_SECRET_KEY": secret}},
		{"api base not a url", "STRIPE_API_BASE", map[string]string{"STRIPE_API_BASE": "localhost:12111"}},
		{"api base with credentials", "STRIPE_API_BASE", map[string]string{"STRIPE_API_BASE": "ftp://user:" + secret + "@localhost"}},
		{"api base bad scheme", "STRIPE_API_BASE", map[string]string{"STRIPE_API_BASE": "ftp://localhost"}},
		{"webhook secret prefix", "STRIPE_WEBHOOK_SECRET", map[string]string{"STRIPE_WEBHOOK_SECRET": secret}},
		{"webhook secret empty body", "STRIPE_WEBHOOK_SECRET", map[string]string{"STRIPE_WEBHOOK_SECRET": "whsec_"}},
		{"webhook second secret bad", "STRIPE_WEBHOOK_SECRET", map[string]string{"STRIPE_WEBHOOK_SECRET": "whsec_a," + secret}},
		{"starter price malformed", "PRICE_STARTER", map[string]string{"PRICE_STARTER": "prod_123", "PRICE_PRO": "price_1"}},
		{"pro price is a secret", "PRICE_PRO", map[string]string{"PRICE_STARTER": "price_1", "PRICE_PRO": "sk_live_" + secret}},
		{"starter price is a webhook secret", "PRICE_STARTER", map[string]string{"PRICE_STARTER": "whsec_" + secret, "PRICE_PRO": "price_1"}},
		{"starter missing", "PRICE_STARTER", map[string]string{"PRICE_PRO": "price_1"}},
		{"metered without prices", "PRICE_PRO_METERED", map[string]string{"PRICE_PRO_METERED": "price_1"}},
		{"metered malformed", "PRICE_PRO_METERED", map[string]string{"PRICE_STARTER": "price_1", "PRICE_PRO": "price_2", "PRICE_PRO_METERED": "rk_live_" + secret}},
		// checkout's catalog names the tier here, not the variable.
		{"metered same as licensed", "PRICE_STARTER", map[string]string{"PRICE_STARTER": "price_1", "PRICE_PRO": "price_2", "PRICE_STARTER_METERED": "price_1"}},
		{"two tiers, one price", "PRICE_STARTER", map[string]string{"PRICE_STARTER": "price_1", "PRICE_PRO": "price_1"}},
		{"metered with the demo plans", "PRICE_STARTER_METERED", map[string]string{"PRICE_STARTER_METERED": "price_1"}},
		{"tier name malformed", "PRICE__GOLD", map[string]string{"PRICE_STARTER": "price_1", "PRICE__GOLD": "price_2"}},
		{"tier without limits", "PLAN_GOLD_INCLUDED", map[string]string{"PRICE_STARTER": "price_1", "PRICE_GOLD": "price_2"}},
		{"plan of an unpriced tier", "PLAN_GOLD_INCLUDED", map[string]string{"PLAN_GOLD_INCLUDED": "5"}},
		{"plan field unknown", "PLAN_PRO_INCLUDE", map[string]string{"PLAN_PRO_INCLUDE": "5"}},
		{"included not a number", "PLAN_PRO_INCLUDED", map[string]string{"PLAN_PRO_INCLUDED": "lots"}},
		{"included negative", "PLAN_STARTER_INCLUDED", map[string]string{"PLAN_STARTER_INCLUDED": "-1"}},
		{"hard is a secret", "PLAN_PRO_HARD", map[string]string{"PLAN_PRO_HARD": "sk_live_" + secret}},
		{"overage is a secret", "PLAN_STARTER_OVERAGE", map[string]string{"PLAN_STARTER_OVERAGE": "rk_live_" + secret}},
		{"overage not a bool", "PLAN_STARTER_OVERAGE", map[string]string{"PLAN_STARTER_OVERAGE": "maybe"}},
		{"overage without a meter", "PRICE_STARTER_METERED", map[string]string{"PLAN_STARTER_OVERAGE": "true"}},
		{"soft above hard", "PLAN_PRO_SOFT", map[string]string{"PLAN_PRO_SOFT": "60000"}},
		{"hard below included", "PLAN_PRO_HARD", map[string]string{"PLAN_PRO_HARD": "10"}},
		{"interval unknown", "PLAN_PRO_INTERVAL", map[string]string{"PLAN_PRO_INTERVAL": "weekly"}},
		{"bill unknown", "PLAN_PRO_BILL", map[string]string{"PLAN_PRO_BILL": "some"}},
		{"bill overage without overage", "PLAN_STARTER_BILL", map[string]string{"PLAN_STARTER_BILL": "overage"}},
		{"public url relative", "PUBLIC_URL", map[string]string{"PUBLIC_URL": "/billing"}},
		{"public url with credentials", "PUBLIC_URL", map[string]string{"PUBLIC_URL": "ftp://admin:" + secret + "@example.com"}},
		{"api keys no colon", "API_KEYS", map[string]string{"API_KEYS": secret + secret}},
		{"api keys short key", "API_KEYS", map[string]string{"API_KEYS": "short:alice"}},
		{"api keys empty subject", "API_KEYS", map[string]string{"API_KEYS": secret + secret + ":"}},
		{"api keys bad subject", "API_KEYS", map[string]string{"API_KEYS": secret + secret + ":{alice}"}},
		{"api keys duplicate", "API_KEYS", map[string]string{"API_KEYS": secret + secret + ":a," + secret + secret + ":b"}},
		{"report interval", "USAGE_REPORT_INTERVAL", map[string]string{"USAGE_REPORT_INTERVAL": "soon"}},
		{"report interval negative", "USAGE_REPORT_INTERVAL", map[string]string{"USAGE_REPORT_INTERVAL": "-1s"}},
		{"reconcile interval", "RECONCILE_INTERVAL", map[string]string{"RECONCILE_INTERVAL": "hourly"}},
		{"reconcile interval zero", "RECONCILE_INTERVAL", map[string]string{"RECONCILE_INTERVAL": "0s"}},
		{"reconcile interval negative", "RECONCILE_INTERVAL", map[string]string{"RECONCILE_INTERVAL": "-1h"}},
		{"meter event with a space", "PLAN_PRO_METER_EVENT", map[string]string{"PLAN_PRO_METER_EVENT": "api requests"}},
		{"meter event too long", "PLAN_PRO_METER_EVENT", map[string]string{"PLAN_PRO_METER_EVENT": strings.Repeat("m", 101)}},
		{"meter event is a secret", "PLAN_PRO_METER_EVENT", map[string]string{"PLAN_PRO_METER_EVENT": "sk_live_" + secret}},
		{"meter event is a webhook secret", "PLAN_STARTER_METER_EVENT", map[string]string{"PRICE_STARTER": "price_1", "PRICE_PRO": "price_2", "PLAN_STARTER_METER_EVENT": "whsec_" + secret}},
		{"meter event with credentials", "PLAN_PRO_METER_EVENT", map[string]string{"PLAN_PRO_METER_EVENT": "admin:" + secret + "@meter"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ConfigFromEnv(env(tt.env))
			if err == nil {
				t.Fatal("no error")
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Var != tt.variable {
				t.Fatalf("error %q does not name %s", err, tt.variable)
			}
			if !strings.HasPrefix(err.Error(), tt.variable+": ") {
				t.Errorf("error %q does not start with %s", err, tt.variable)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q reveals a secret", err)
			}
		})
	}
}

func TestConfigFromEnvReportsEveryBadVariable(t *testing.T) {
	t.Parallel()
	_, err := ConfigFromEnv(env(map[string]string{"ADDR": "x", "STRIPE_SECRET_KEY": "pk_x", "PRICE_PRO": "price_1"}))
	for _, v := range []string{"ADDR", "STRIPE_SECRET_KEY", "PRICE_STARTER"} {
		if err == nil || !strings.Contains(err.Error(), v+": ") {
			t.Errorf("error %v does not name %s", err, v)
		}
	}
}

func TestRedisOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url  string
		kind string
		addr []string
	}{
		{"redis://localhost:6379/0", "standalone", []string{"localhost:6379"}},
		{"rediss://user:pw@redis.example.com:6380", "standalone", []string{"redis.example.com:6380"}},
		{"redis+sentinel://s1:26379?master_name=mymaster&addr=s2:26379", "sentinel", []string{"s1:26379", "s2:26379"}},
		{"redis+cluster://n1:7000?addr=n2:7001&addr=n3:7002", "cluster", []string{"n1:7000", "n2:7001", "n3:7002"}},
		{"rediss+cluster://n1:7000", "cluster", []string{"n1:7000"}},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			c, err := redisOptions(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			var kind string
			var addr []string
			switch {
			case c.standalone != nil:
				kind, addr = "standalone", []string{c.standalone.Addr}
				if !c.standalone.ContextTimeoutEnabled {
					t.Error("context timeouts disabled")
				}
			case c.sentinel != nil:
				kind, addr = "sentinel", c.sentinel.SentinelAddrs
			case c.cluster != nil:
				kind, addr = "cluster", c.cluster.Addrs
			}
			if kind != tt.kind || strings.Join(addr, ",") != strings.Join(tt.addr, ",") {
				t.Errorf("got %s %v, want %s %v", kind, addr, tt.kind, tt.addr)
			}
		})
	}
}

// TestREADMEDocumentsEveryVariable checks that the README's configuration
// table names every variable the server reads.
func TestREADMEDocumentsEveryVariable(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range envVars() {
		if !strings.Contains(string(readme), "| `"+v.Name+"`") && !strings.Contains(string(readme), ", `"+v.Name+"` |") {
			t.Errorf("README.md's configuration table does not document %s", v.Name)
		}
	}
}
