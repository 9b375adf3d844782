package checkout_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/billkit/billkit/checkout"
)

func TestNewCatalogErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		tiers []checkout.Tier
		names string // what the message must name
	}{
		{"no tiers", nil, "no tiers"},
		{"empty name", []checkout.Tier{{Name: " ", PriceID: "price_1"}}, `tier " "`},
		{"bad name", []checkout.Tier{{Name: "pro plan", PriceID: "price_1"}}, `tier "pro plan"`},
		{"leading dash", []checkout.Tier{{Name: "-pro", PriceID: "price_1"}}, `tier "-pro"`},
		{"reserved suffix", []checkout.Tier{{Name: "pro_metered", PriceID: "price_1"}}, `tier "pro_metered"`},
		{"long name", []checkout.Tier{{Name: strings.Repeat("a", 65), PriceID: "price_1"}}, "longer than 64"},
		{"empty price", []checkout.Tier{{Name: "pro"}}, `tier "pro": price ID is empty`},
		{"product not price", []checkout.Tier{{Name: "pro", PriceID: "prod_123"}}, `tier "pro": price ID must start with "price_"`},
		{"bare prefix", []checkout.Tier{{Name: "pro", PriceID: "price_"}}, `tier "pro"`},
		{"bad chars", []checkout.Tier{{Name: "pro", PriceID: "price_1;DROP"}}, `tier "pro"`},
		{"bad metered", []checkout.Tier{{Name: "pro", PriceID: "price_1", MeteredPriceID: "x"}}, `tier "pro": metered price ID`},
		{"metered equals base", []checkout.Tier{{Name: "pro", PriceID: "price_1", MeteredPriceID: "price_1"}}, `tier "pro": metered`},
		{"duplicate name", []checkout.Tier{{Name: "pro", PriceID: "price_1"}, {Name: "PRO", PriceID: "price_2"}}, `tier "pro" is defined twice`},
		{"shared price", []checkout.Tier{{Name: "pro", PriceID: "price_1"}, {Name: "team", PriceID: "price_1"}}, `tier "team": price "price_1" already belongs to tier "pro"`},
		{"shared metered price", []checkout.Tier{{Name: "pro", PriceID: "price_1", MeteredPriceID: "price_m"}, {Name: "team", PriceID: "price_2", MeteredPriceID: "price_m"}}, `tier "team"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := checkout.NewCatalog(tt.tiers...)
			if c != nil || !errors.Is(err, checkout.ErrInvalidCatalog) || !strings.Contains(err.Error(), tt.names) {
				t.Errorf("NewCatalog = %v, %v; want ErrInvalidCatalog naming %s", c, err, tt.names)
			}
		})
	}
}

func TestCatalogLookups(t *testing.T) {
	t.Parallel()
	c, err := checkout.CatalogFromMap(map[string]string{"Starter": "price_s", " pro ": " price_p "})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Names(), []string{"pro", "starter"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Names = %v, want %v", got, want)
	}
	for _, name := range []string{"pro", "PRO", " Pro"} {
		if tier, ok := c.Tier(name); !ok || tier.PriceID != "price_p" || tier.Name != "pro" {
			t.Errorf("Tier(%q) = %+v, %v", name, tier, ok)
		}
	}
	if _, ok := c.Tier("gold"); ok {
		t.Error("Tier(gold) found")
	}
	if tier, ok := c.TierByPrice("price_s"); !ok || tier.Name != "starter" {
		t.Errorf("TierByPrice(price_s) = %+v, %v", tier, ok)
	}
	if _, ok := c.TierByPrice("price_unknown"); ok {
		t.Error("TierByPrice(price_unknown) found")
	}
	tiers := c.Tiers()
	tiers[0].PriceID = "price_mutated"
	if tier, _ := c.Tier("pro"); tier.PriceID != "price_p" {
		t.Error("Tiers() exposes the catalog's storage")
	}
	var zero checkout.Catalog
	var nilCat *checkout.Catalog
	for _, z := range []*checkout.Catalog{&zero, nilCat} {
		if _, ok := z.Tier("pro"); ok || z.Len() != 0 || z.Names() != nil && len(z.Names()) != 0 {
			t.Error("an empty catalog finds tiers")
		}
		if _, ok := z.TierByPrice("price_p"); ok {
			t.Error("an empty catalog finds prices")
		}
	}
	if _, err := checkout.CatalogFromMap(map[string]string{"pro": ""}); !errors.Is(err, checkout.ErrInvalidCatalog) || !strings.Contains(err.Error(), `tier "pro"`) {
		t.Errorf("empty price: %v", err)
	}
}

func TestTierByPriceMetered(t *testing.T) {
	t.Parallel()
	c := testCatalog(t)
	for _, p := range []string{"price_pro456", "price_prometered789"} {
		if tier, ok := c.TierByPrice(p); !ok || tier.Name != "pro" || tier.MeteredPriceID != "price_prometered789" {
			t.Errorf("TierByPrice(%s) = %+v, %v", p, tier, ok)
		}
	}
}

func lookupMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestCatalogFromEnv(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"PRICE_STARTER":          "price_s1",
		"PRICE_PRO":              "price_p1",
		"PRICE_PRO_METERED":      "price_pm1",
		"PRICE_TEAM_ANNUAL":      "price_ta1",
		"PRICE_EMPTY":            "",
		"PRICE_BAD":              "sk_live_abcdefSECRET",
		"PRICE_GOOD_METERED_BAD": "x",
	}
	c, err := checkout.CatalogFromEnv(lookupMap(env), "starter", "Pro", "team-annual")
	if err != nil {
		t.Fatal(err)
	}
	want := []checkout.Tier{
		{Name: "pro", PriceID: "price_p1", MeteredPriceID: "price_pm1"},
		{Name: "starter", PriceID: "price_s1"},
		{Name: "team-annual", PriceID: "price_ta1"},
	}
	if got := c.Tiers(); !reflect.DeepEqual(got, want) {
		t.Errorf("Tiers = %+v, want %+v", got, want)
	}

	tests := []struct {
		name  string
		tiers []string
		names string
	}{
		{"unset", []string{"gold"}, "PRICE_GOLD is not set"},
		{"empty", []string{"empty"}, "PRICE_EMPTY: price ID is empty"},
		{"malformed", []string{"bad"}, `PRICE_BAD: price ID must start with "price_"`},
		{"no tiers", nil, "no tiers"},
		{"bad tier name", []string{"a b"}, `tier "a b"`},
		{"duplicate", []string{"pro", "PRO"}, "defined twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := checkout.CatalogFromEnv(lookupMap(env), tt.tiers...)
			if !errors.Is(err, checkout.ErrInvalidCatalog) || !strings.Contains(err.Error(), tt.names) {
				t.Fatalf("err = %v, want ErrInvalidCatalog naming %s", err, tt.names)
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("the error echoes a variable's value: %v", err)
			}
		})
	}
	env2 := map[string]string{"PRICE_PRO": "price_p", "PRICE_PRO_METERED": "nope"}
	if _, err := checkout.CatalogFromEnv(lookupMap(env2), "pro"); err == nil || !strings.Contains(err.Error(), "PRICE_PRO_METERED") {
		t.Errorf("bad metered price: err = %v, want it to name PRICE_PRO_METERED", err)
	}
	if _, err := checkout.CatalogFromEnv(nil, "pro"); !errors.Is(err, checkout.ErrInvalidCatalog) {
		t.Errorf("nil lookup: err = %v", err)
	}
}

func TestCatalogFromEnviron(t *testing.T) {
	t.Parallel()
	c, err := checkout.CatalogFromEnviron([]string{
		"HOME=/root", "PATH=/bin", "PRICES=ignored",
		"PRICE_PRO=price_p1", "PRICE_PRO_METERED=price_pm1", "PRICE_STARTER=price_s1",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []checkout.Tier{
		{Name: "pro", PriceID: "price_p1", MeteredPriceID: "price_pm1"},
		{Name: "starter", PriceID: "price_s1"},
	}
	if got := c.Tiers(); !reflect.DeepEqual(got, want) {
		t.Errorf("Tiers = %+v, want %+v", got, want)
	}

	tests := []struct {
		name    string
		environ []string
		names   string
	}{
		{"none", []string{"HOME=/root"}, "no PRICE_<TIER> variable"},
		{"empty", []string{"PRICE_PRO="}, "PRICE_PRO: price ID is empty"},
		{"malformed", []string{"PRICE_PRO=sk_live_SECRET"}, "PRICE_PRO: price ID must start"},
		{"no tier name", []string{"PRICE_=price_1"}, "PRICE_: tier name"},
		{"bad tier name", []string{"PRICE_A.B=price_1"}, "PRICE_A.B: tier name"},
		{"orphan metered", []string{"PRICE_STARTER=price_s", "PRICE_PRO_METERED=price_pm"}, "PRICE_PRO_METERED is set but PRICE_PRO is not"},
		{"bad metered", []string{"PRICE_PRO=price_p", "PRICE_PRO_METERED=prod_x"}, "PRICE_PRO_METERED: price ID must start"},
		{"shared price", []string{"PRICE_A=price_1", "PRICE_B=price_1"}, `already belongs to tier "a"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := checkout.CatalogFromEnviron(tt.environ)
			if !errors.Is(err, checkout.ErrInvalidCatalog) || !strings.Contains(err.Error(), tt.names) {
				t.Fatalf("err = %v, want ErrInvalidCatalog naming %s", err, tt.names)
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("the error echoes a variable's value: %v", err)
			}
		})
	}
}

func TestEnvVar(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"pro": "PRICE_PRO", "Team-Annual": "PRICE_TEAM_ANNUAL", " x ": "PRICE_X"} {
		if got := checkout.EnvVar(in); got != want {
			t.Errorf("EnvVar(%q) = %q, want %q", in, got, want)
		}
	}
}
