package app

import (
	"net/http"
	"testing"
	"time"

	"github.com/billkit/billkit/internal/fakeclock"
)

// TestUsageLimit checks GET /billing/usage's limit and remaining: zero
// without a plan (nothing remains), null for a plan without a cap (pro with
// overage and PLAN_PRO_HARD=0), numbers for a capped plan.
func TestUsageLimit(t *testing.T) {
	t.Parallel()
	const (
		key    = "usage-key-0123456789abcdef"
		secret = "whsec_usage_test_secret"
	)
	base, _, _ := startRun(t, map[string]string{
		"API_KEYS":              key + ":alice",
		"STRIPE_WEBHOOK_SECRET": secret,
		"PLAN_PRO_HARD":         "0", // pro: overage without a cap
	})
	c := &testClient{t: t, base: base, key: key, secret: secret, clock: fakeclock.New(time.Now()), sub: demoSub("alice")}

	u := c.wantUsage("none", "", 0)
	if u["limit"] != 0.0 || u["remaining"] != 0.0 {
		t.Errorf("without a plan: limit %v, remaining %v, want 0 and 0", u["limit"], u["remaining"])
	}

	c.send("subscription-created")
	c.hello(http.StatusOK, "")
	u = c.wantUsage("active", "pro", 1)
	if v, ok := u["limit"]; !ok || v != nil {
		t.Errorf("pro without a cap: limit %v (present %v), want null", v, ok)
	}
	if v, ok := u["remaining"]; !ok || v != nil {
		t.Errorf("pro without a cap: remaining %v (present %v), want null", v, ok)
	}
	if u["included"] != float64(proIncluded) {
		t.Errorf("included %v, want %d", u["included"], proIncluded)
	}

	c.sub.Tier, c.sub.PriceID, c.sub.MeteredPriceID = "starter", demoPriceStarter, ""
	c.send("subscription-updated")
	u = c.wantUsage("active", "starter", 1)
	if u["limit"] != float64(starterIncluded) || u["remaining"] != float64(starterIncluded-1) {
		t.Errorf("starter: limit %v, remaining %v, want %d and %d", u["limit"], u["remaining"], starterIncluded, starterIncluded-1)
	}
}
