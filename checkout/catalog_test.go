package checkout_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/billkit/billkit/checkout"
)

func TestNewPricesErrors(t *testing.T) {
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
			c, err := checkout.NewPrices(tt.tiers...)
			if c != nil || !errors.Is(err, checkout.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.names) {
				t.Errorf("NewPrices = %v, %v; want ErrInvalidConfig naming %s", c, err, tt.names)
			}
		})
	}
}

func TestPricesLookups(t *testing.T) {
	t.Parallel()
	c, err := checkout.NewPrices(
		checkout.Tier{Name: "Starter", PriceID: "price_s"},
		checkout.Tier{Name: " pro ", PriceID: " price_p ", MeteredPriceID: "price_pm "},
	)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Tiers(), []string{"pro", "starter"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Tiers = %v, want %v", got, want)
	}
	for _, name := range []string{"pro", "PRO", " Pro"} {
		if tier, ok := c.Tier(name); !ok || tier != (checkout.Tier{Name: "pro", PriceID: "price_p", MeteredPriceID: "price_pm"}) {
			t.Errorf("Tier(%q) = %+v, %v", name, tier, ok)
		}
	}
	for _, name := range []string{"gold", "", "price_p"} {
		if _, ok := c.Tier(name); ok {
			t.Errorf("Tier(%q) found", name)
		}
	}
	names := c.Tiers()
	names[0] = "mutated"
	if got := c.Tiers(); got[0] != "pro" {
		t.Errorf("Tiers() hands out the catalog's storage: after a caller's write it is %v", got)
	}
	var zero checkout.Prices
	var nilPrices *checkout.Prices
	for _, z := range []*checkout.Prices{&zero, nilPrices} {
		if _, ok := z.Tier("pro"); ok || len(z.Tiers()) != 0 {
			t.Errorf("an empty catalog %#v finds tiers", z)
		}
	}
}

// tiersOf lists c's tiers in the order of its Tiers.
func tiersOf(t *testing.T, c checkout.Catalog) []checkout.Tier {
	t.Helper()
	var all []checkout.Tier
	for _, name := range c.Tiers() {
		tier, ok := c.Tier(name)
		if !ok {
			t.Fatalf("Tier(%q) not found, though Tiers lists it", name)
		}
		all = append(all, tier)
	}
	return all
}

func lookupMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestPricesFromEnv(t *testing.T) {
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
	c, err := checkout.PricesFromEnv(lookupMap(env), "starter", "Pro", "team-annual")
	if err != nil {
		t.Fatal(err)
	}
	want := []checkout.Tier{
		{Name: "pro", PriceID: "price_p1", MeteredPriceID: "price_pm1"},
		{Name: "starter", PriceID: "price_s1"},
		{Name: "team-annual", PriceID: "price_ta1"},
	}
	if got := tiersOf(t, c); !reflect.DeepEqual(got, want) {
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
			_, err := checkout.PricesFromEnv(lookupMap(env), tt.tiers...)
			if !errors.Is(err, checkout.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.names) {
				t.Fatalf("err = %v, want ErrInvalidConfig naming %s", err, tt.names)
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("the error echoes a variable's value: %v", err)
			}
		})
	}
	env2 := map[string]string{"PRICE_PRO": "price_p", "PRICE_PRO_METERED": "nope"}
	if _, err := checkout.PricesFromEnv(lookupMap(env2), "pro"); err == nil || !strings.Contains(err.Error(), "PRICE_PRO_METERED") {
		t.Errorf("bad metered price: err = %v, want it to name PRICE_PRO_METERED", err)
	}
	if _, err := checkout.PricesFromEnv(nil, "pro"); !errors.Is(err, checkout.ErrInvalidConfig) {
		t.Errorf("nil lookup: err = %v", err)
	}
}

func TestPricesFromEnviron(t *testing.T) {
	t.Parallel()
	c, err := checkout.PricesFromEnviron([]string{
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
	if got := tiersOf(t, c); !reflect.DeepEqual(got, want) {
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
		{"shared metered price", []string{"PRICE_A=price_1", "PRICE_B=price_2", "PRICE_B_METERED=price_1"}, `already belongs to tier "a"`},
		{"metered of a bad tier name", []string{"PRICE_PRO=price_p", "PRICE_A.B_METERED=price_m"}, "PRICE_A.B_METERED: tier name"},
		{"one tier in two cases", []string{"PRICE_PRO=price_1", "PRICE_pro=price_2"}, `tier "pro" is defined twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := checkout.PricesFromEnviron(tt.environ)
			if !errors.Is(err, checkout.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.names) {
				t.Fatalf("err = %v, want ErrInvalidConfig naming %s", err, tt.names)
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

// TestPricesFromEnvironFirstWins: of two entries for one variable the
// first counts, as for os.Getenv.
func TestPricesFromEnvironFirstWins(t *testing.T) {
	t.Parallel()
	c, err := checkout.PricesFromEnviron([]string{"PRICE_PRO=price_first", "PRICE_PRO=price_second"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tiersOf(t, c), []checkout.Tier{{Name: "pro", PriceID: "price_first"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("tiers = %+v, want %+v", got, want)
	}
}

// TestEnvParsersAgree: PricesFromEnv and PricesFromEnviron are one parser:
// the same variables give the same catalog, and the same bad variable the
// same error.
func TestEnvParsersAgree(t *testing.T) {
	t.Parallel()
	for _, environ := range [][]string{
		{"PRICE_STARTER=price_s1", "PRICE_PRO=price_p1", "PRICE_PRO_METERED=price_pm1", "PRICE_TEAM_ANNUAL= price_ta1 "},
		{"PRICE_STARTER=price_s1", "PRICE_PRO=prod_p1"},
		{"PRICE_STARTER=price_s1", "PRICE_PRO=price_p1", "PRICE_PRO_METERED="},
		{"PRICE_STARTER=price_s1", "PRICE_PRO=price_p1", "PRICE_PRO_METERED=price_s1"},
	} {
		env := map[string]string{}
		var tiers []string
		for _, kv := range environ {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
			if name, ok := strings.CutPrefix(k, "PRICE_"); ok && !strings.HasSuffix(name, "_METERED") {
				tiers = append(tiers, strings.ToLower(name))
			}
		}
		a, errA := checkout.PricesFromEnv(lookupMap(env), tiers...)
		b, errB := checkout.PricesFromEnviron(environ)
		if fmt.Sprint(errA) != fmt.Sprint(errB) {
			t.Errorf("%q: PricesFromEnv: %v; PricesFromEnviron: %v", environ, errA, errB)
			continue
		}
		if errA == nil && !reflect.DeepEqual(tiersOf(t, a), tiersOf(t, b)) {
			t.Errorf("%q: PricesFromEnv gives %+v, PricesFromEnviron %+v", environ, tiersOf(t, a), tiersOf(t, b))
		}
		if errA == nil && len(a.Tiers()) != len(tiers) {
			t.Errorf("%q: %d tiers, want %d", environ, len(a.Tiers()), len(tiers))
		}
	}
}
