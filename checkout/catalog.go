package checkout

import (
	"fmt"
	"sort"
	"strings"
)

// EnvPrefix is the prefix of the environment variables that hold tier
// prices: PRICE_<TIER> holds a tier's price ID and PRICE_<TIER>_METERED its
// optional metered price ID.
const EnvPrefix = "PRICE_"

// EnvMeteredSuffix ends the name of the environment variable that holds a
// tier's optional metered price ID, as in PRICE_PRO_METERED.
const EnvMeteredSuffix = "_METERED"

const (
	maxTierLen    = 64
	maxPriceIDLen = 255
	pricePrefix   = "price_"
)

// Tier is one pricing tier: a name the application and its customers use
// ("pro") and the Stripe price a subscription to it is made of.
type Tier struct {
	// Name identifies the tier. It is normalized to lower case; it holds
	// letters, digits, '_' and '-', starts with a letter or digit, is at
	// most 64 bytes long, and does not end in "_metered".
	Name string
	// PriceID is the Stripe price of the tier's subscription, for example
	// "price_1OaBcD...". Required. It must start with "price_".
	PriceID string
	// MeteredPriceID is an optional second, metered (usage-based) Stripe
	// price of the same subscription. Checkout adds it as a line item
	// without a quantity, as Stripe requires for metered prices. Empty
	// means the tier has no metered price.
	MeteredPriceID string
}

// Catalog maps tier names to Stripe prices, and prices back to tiers. It is
// built from configuration (code or environment), validated once, and is
// immutable afterwards.
//
// A Catalog is safe for concurrent use. The zero value is an empty catalog
// in which every lookup fails; build one with [NewCatalog],
// [CatalogFromMap], [CatalogFromEnv] or [CatalogFromEnviron].
type Catalog struct {
	tiers   []Tier          // sorted by name
	byName  map[string]Tier // normalized name → tier
	byPrice map[string]Tier // base or metered price ID → tier
}

// NewCatalog returns a catalog of tiers. Names are normalized to lower case.
// It returns an error wrapping [ErrInvalidCatalog], naming the tier, when a
// name or price ID is empty or malformed, when two tiers share a name or a
// price, or when tiers is empty.
func NewCatalog(tiers ...Tier) (*Catalog, error) {
	if len(tiers) == 0 {
		return nil, fmt.Errorf("%w: no tiers", ErrInvalidCatalog)
	}
	c := &Catalog{
		byName:  make(map[string]Tier, len(tiers)),
		byPrice: make(map[string]Tier, len(tiers)),
	}
	for _, t := range tiers {
		raw := t.Name
		t.Name = normalizeTier(t.Name)
		if err := validTierName(t.Name); err != nil {
			return nil, fmt.Errorf("%w: tier %q: %v", ErrInvalidCatalog, raw, err)
		}
		t.PriceID = strings.TrimSpace(t.PriceID)
		t.MeteredPriceID = strings.TrimSpace(t.MeteredPriceID)
		if err := validPriceID(t.PriceID); err != nil {
			return nil, fmt.Errorf("%w: tier %q: price ID %v", ErrInvalidCatalog, t.Name, err)
		}
		if t.MeteredPriceID != "" {
			if err := validPriceID(t.MeteredPriceID); err != nil {
				return nil, fmt.Errorf("%w: tier %q: metered price ID %v", ErrInvalidCatalog, t.Name, err)
			}
			if t.MeteredPriceID == t.PriceID {
				return nil, fmt.Errorf("%w: tier %q: metered price ID equals its price ID", ErrInvalidCatalog, t.Name)
			}
		}
		if _, dup := c.byName[t.Name]; dup {
			return nil, fmt.Errorf("%w: tier %q is defined twice", ErrInvalidCatalog, t.Name)
		}
		for _, p := range []string{t.PriceID, t.MeteredPriceID} {
			if p == "" {
				continue
			}
			if other, dup := c.byPrice[p]; dup {
				return nil, fmt.Errorf("%w: tier %q: price %q already belongs to tier %q", ErrInvalidCatalog, t.Name, p, other.Name)
			}
			c.byPrice[p] = t
		}
		c.byName[t.Name] = t
		c.tiers = append(c.tiers, t)
	}
	sort.Slice(c.tiers, func(i, j int) bool { return c.tiers[i].Name < c.tiers[j].Name })
	return c, nil
}

// CatalogFromMap returns a catalog from a map of tier name to price ID, for
// tiers without a metered price. It validates like [NewCatalog].
func CatalogFromMap(prices map[string]string) (*Catalog, error) {
	tiers := make([]Tier, 0, len(prices))
	for name, price := range prices {
		tiers = append(tiers, Tier{Name: name, PriceID: price})
	}
	// Deterministic error messages whatever the map's order.
	sort.Slice(tiers, func(i, j int) bool { return tiers[i].Name < tiers[j].Name })
	return NewCatalog(tiers...)
}

// EnvVar returns the name of the environment variable that holds tier's
// price ID: "PRICE_" followed by the tier's name in upper case with '-'
// replaced by '_'. For "pro" it is "PRICE_PRO".
func EnvVar(tier string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(tier), "-", "_"))
}

// CatalogFromEnv returns a catalog of the named tiers, reading each tier's
// price ID from the variable [EnvVar](tier) and its optional metered price
// from the same name followed by [EnvMeteredSuffix]. lookup reads one
// variable; pass [os.LookupEnv] in production and a map-backed function in
// tests.
//
// A variable that is unset, empty or malformed is an error wrapping
// [ErrInvalidCatalog] that names the variable.
func CatalogFromEnv(lookup func(name string) (string, bool), tiers ...string) (*Catalog, error) {
	if lookup == nil {
		return nil, fmt.Errorf("%w: nil lookup function", ErrInvalidCatalog)
	}
	if len(tiers) == 0 {
		return nil, fmt.Errorf("%w: no tiers named", ErrInvalidCatalog)
	}
	list := make([]Tier, 0, len(tiers))
	for _, name := range tiers {
		if err := validTierName(normalizeTier(name)); err != nil {
			return nil, fmt.Errorf("%w: tier %q: %v", ErrInvalidCatalog, name, err)
		}
		v := EnvVar(name)
		price, ok := lookup(v)
		if !ok {
			return nil, fmt.Errorf("%w: %s is not set (the Stripe price ID of tier %q)", ErrInvalidCatalog, v, normalizeTier(name))
		}
		if err := validPriceID(strings.TrimSpace(price)); err != nil {
			return nil, fmt.Errorf("%w: %s: price ID %v", ErrInvalidCatalog, v, err)
		}
		t := Tier{Name: name, PriceID: price}
		if metered, ok := lookup(v + EnvMeteredSuffix); ok {
			if err := validPriceID(strings.TrimSpace(metered)); err != nil {
				return nil, fmt.Errorf("%w: %s: price ID %v", ErrInvalidCatalog, v+EnvMeteredSuffix, err)
			}
			t.MeteredPriceID = metered
		}
		list = append(list, t)
	}
	return NewCatalog(list...)
}

// CatalogFromEnviron returns a catalog of every tier found in environ, a
// list of "KEY=value" strings as returned by [os.Environ]: each variable
// PRICE_<TIER> defines tier <tier> (lower-cased), and PRICE_<TIER>_METERED
// its metered price. Every PRICE_ variable is taken to be a tier price, so
// keep other settings out of that prefix.
//
// An empty or malformed value, a metered price without its tier, or no
// PRICE_ variable at all is an error wrapping [ErrInvalidCatalog] that names
// the variable.
func CatalogFromEnviron(environ []string) (*Catalog, error) {
	base := map[string]string{}    // tier → price
	metered := map[string]string{} // tier → metered price
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, EnvPrefix) {
			continue
		}
		rest := strings.TrimPrefix(k, EnvPrefix)
		target := base
		if strings.HasSuffix(rest, EnvMeteredSuffix) {
			rest = strings.TrimSuffix(rest, EnvMeteredSuffix)
			target = metered
		}
		tier := normalizeTier(rest)
		if err := validTierName(tier); err != nil {
			return nil, fmt.Errorf("%w: %s: tier name: %v", ErrInvalidCatalog, k, err)
		}
		if err := validPriceID(strings.TrimSpace(v)); err != nil {
			return nil, fmt.Errorf("%w: %s: price ID %v", ErrInvalidCatalog, k, err)
		}
		target[tier] = v
	}
	if len(base) == 0 {
		return nil, fmt.Errorf("%w: no %s<TIER> variable is set", ErrInvalidCatalog, EnvPrefix)
	}
	for tier := range metered {
		if _, ok := base[tier]; !ok {
			return nil, fmt.Errorf("%w: %s is set but %s is not", ErrInvalidCatalog, EnvVar(tier)+EnvMeteredSuffix, EnvVar(tier))
		}
	}
	tiers := make([]Tier, 0, len(base))
	for tier, price := range base {
		tiers = append(tiers, Tier{Name: tier, PriceID: price, MeteredPriceID: metered[tier]})
	}
	sort.Slice(tiers, func(i, j int) bool { return tiers[i].Name < tiers[j].Name })
	return NewCatalog(tiers...)
}

// Tier returns the tier named name (case-insensitive), and whether it exists.
func (c *Catalog) Tier(name string) (Tier, bool) {
	if c == nil {
		return Tier{}, false
	}
	t, ok := c.byName[normalizeTier(name)]
	return t, ok
}

// TierByPrice returns the tier whose price or metered price is priceID, and
// whether there is one. Use it to map a Stripe subscription item's price
// back to a tier.
func (c *Catalog) TierByPrice(priceID string) (Tier, bool) {
	if c == nil {
		return Tier{}, false
	}
	t, ok := c.byPrice[priceID]
	return t, ok
}

// Tiers returns a copy of the catalog's tiers, sorted by name.
func (c *Catalog) Tiers() []Tier {
	if c == nil {
		return nil
	}
	return append([]Tier(nil), c.tiers...)
}

// Names returns the catalog's tier names, sorted.
func (c *Catalog) Names() []string {
	if c == nil {
		return nil
	}
	names := make([]string, len(c.tiers))
	for i, t := range c.tiers {
		names[i] = t.Name
	}
	return names
}

// Len returns the number of tiers.
func (c *Catalog) Len() int {
	if c == nil {
		return 0
	}
	return len(c.tiers)
}

func normalizeTier(name string) string {
	return strings.ToLower(strings.TrimSpace(name))
}

func validTierName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty name")
	case len(name) > maxTierLen:
		return fmt.Errorf("name longer than %d bytes", maxTierLen)
	case strings.HasSuffix(name, strings.ToLower(EnvMeteredSuffix)):
		return fmt.Errorf("name must not end in %q", strings.ToLower(EnvMeteredSuffix))
	}
	for i := 0; i < len(name); i++ {
		b := name[i]
		switch {
		case b >= 'a' && b <= 'z', b >= '0' && b <= '9':
		case (b == '_' || b == '-') && i > 0:
		default:
			return fmt.Errorf("name %q may hold only letters, digits, '_' and '-', and must start with a letter or digit", name)
		}
	}
	return nil
}

func validPriceID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("is empty")
	case len(id) > maxPriceIDLen:
		return fmt.Errorf("is longer than %d bytes", maxPriceIDLen)
	case !strings.HasPrefix(id, pricePrefix) || len(id) == len(pricePrefix):
		// The value is not echoed: a misplaced secret key must not reach
		// an error message or a log.
		return fmt.Errorf("must start with %q", pricePrefix)
	}
	for i := 0; i < len(id); i++ {
		b := id[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_') {
			return fmt.Errorf("may hold only letters, digits and '_'")
		}
	}
	return nil
}
