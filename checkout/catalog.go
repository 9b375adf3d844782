package checkout

import (
	"fmt"
	"sort"
	"strings"
)

// EnvPrefix is the prefix of the environment variables that hold tier
// prices: PRICE_<TIER> holds a tier's price ID and PRICE_<TIER>_METERED its
// optional metered price ID. See [PricesFromEnv].
const EnvPrefix = "PRICE_"

// EnvMeteredSuffix ends the name of the environment variable that holds a
// tier's optional metered price ID, as in PRICE_PRO_METERED.
const EnvMeteredSuffix = "_METERED"

const (
	maxTierLen    = 64
	maxPriceIDLen = 255
	pricePrefix   = "price_"
)

// Catalog is what checkout needs of a plan catalog: the Stripe prices each
// tier sells. [Prices] implements it for users of checkout alone; a larger
// plan catalog (billkit's billing plans) implements it too, so that one
// catalog configures checkout and billing alike.
//
// [Sessions] calls Tier with the requested name trimmed of spaces and in
// lower case, and attaches the returned Tier's Name to the session as
// [MetadataTier]. [New] checks once that every name Tiers lists is found
// that way, with a Name and a PriceID. Implementations must be safe for
// concurrent use.
type Catalog interface {
	// Tier returns the prices tier sells; false for an unknown tier.
	Tier(name string) (Tier, bool)
	// Tiers returns the valid tier names, for error messages, in a stable order.
	Tiers() []string
}

// Tier is one pricing tier: a name the application and its customers use
// ("pro") and the Stripe prices a subscription to it is made of. The zero
// Tier names no tier and sells nothing; [NewPrices] rejects it.
type Tier struct {
	// Name identifies the tier. [NewPrices] normalizes it to lower case
	// and requires letters, digits, '_' and '-', a letter or digit first,
	// at most 64 bytes, and no "_metered" suffix.
	Name string
	// PriceID is the Stripe price of the tier's subscription, for example
	// "price_1OaBcD...". Required. [NewPrices] requires the "price_"
	// prefix.
	PriceID string
	// MeteredPriceID is an optional second, metered (usage-based) Stripe
	// price of the same subscription. Checkout adds it as a line item
	// without a quantity, as Stripe requires for metered prices. Empty
	// means the tier has no metered price.
	MeteredPriceID string
}

// Prices is a [Catalog] held in memory: tier names mapped to Stripe prices,
// built from configuration (code or environment), validated once, and
// immutable afterwards. Tier names are case-insensitive.
//
// Prices is safe for concurrent use. The zero value is an empty catalog in
// which every lookup fails (and which [New] rejects); build one with
// [NewPrices], [PricesFromEnv] or [PricesFromEnviron].
type Prices struct {
	names  []string        // sorted
	byName map[string]Tier // normalized name → tier
}

var _ Catalog = (*Prices)(nil)

// NewPrices returns a catalog of tiers. Names are normalized to lower case.
// It returns an error wrapping [ErrInvalidConfig], naming the tier, when
// tiers is empty, when a name or price ID is empty or malformed, or when
// two tiers share a name or a price (a price must map back to one tier).
func NewPrices(tiers ...Tier) (*Prices, error) {
	if len(tiers) == 0 {
		return nil, fmt.Errorf("%w: no tiers", ErrInvalidConfig)
	}
	p := &Prices{byName: make(map[string]Tier, len(tiers))}
	byPrice := make(map[string]string, len(tiers)) // price ID → tier name
	for _, t := range tiers {
		raw := t.Name
		t.Name = normalizeTier(t.Name)
		if err := validTierName(t.Name); err != nil {
			return nil, fmt.Errorf("%w: tier %q: %v", ErrInvalidConfig, raw, err)
		}
		t.PriceID = strings.TrimSpace(t.PriceID)
		t.MeteredPriceID = strings.TrimSpace(t.MeteredPriceID)
		if err := validPriceID(t.PriceID); err != nil {
			return nil, fmt.Errorf("%w: tier %q: price ID %v", ErrInvalidConfig, t.Name, err)
		}
		if t.MeteredPriceID != "" {
			if err := validPriceID(t.MeteredPriceID); err != nil {
				return nil, fmt.Errorf("%w: tier %q: metered price ID %v", ErrInvalidConfig, t.Name, err)
			}
			if t.MeteredPriceID == t.PriceID {
				return nil, fmt.Errorf("%w: tier %q: metered price ID equals its price ID", ErrInvalidConfig, t.Name)
			}
		}
		if _, dup := p.byName[t.Name]; dup {
			return nil, fmt.Errorf("%w: tier %q is defined twice", ErrInvalidConfig, t.Name)
		}
		for _, id := range []string{t.PriceID, t.MeteredPriceID} {
			if id == "" {
				continue
			}
			if other, dup := byPrice[id]; dup {
				return nil, fmt.Errorf("%w: tier %q: price %q already belongs to tier %q", ErrInvalidConfig, t.Name, id, other)
			}
			byPrice[id] = t.Name
		}
		p.byName[t.Name] = t
		p.names = append(p.names, t.Name)
	}
	sort.Strings(p.names)
	return p, nil
}

// EnvVar returns the name of the environment variable that holds tier's
// price ID: "PRICE_" followed by the tier's name in upper case with '-'
// replaced by '_'. For "pro" it is "PRICE_PRO".
func EnvVar(tier string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(tier), "-", "_"))
}

// PricesFromEnv is billkit's parser of the PRICE_* environment variables.
// It returns a catalog of the named tiers, reading each tier's price ID from
// the variable [EnvVar](tier) (PRICE_PRO for "pro") and its optional
// metered price ID from the same name followed by [EnvMeteredSuffix]
// (PRICE_PRO_METERED). lookup reads one variable; pass [os.LookupEnv] in
// production and a map-backed function in tests. [PricesFromEnviron] reads
// the same variables without a list of tiers.
//
// A variable that is unset (PRICE_<TIER> only), empty or malformed is an
// error wrapping [ErrInvalidConfig] that names the variable and never holds
// its value; the catalog is then validated as by [NewPrices].
func PricesFromEnv(lookup func(name string) (string, bool), tiers ...string) (*Prices, error) {
	if lookup == nil {
		return nil, fmt.Errorf("%w: nil lookup function", ErrInvalidConfig)
	}
	if len(tiers) == 0 {
		return nil, fmt.Errorf("%w: no tiers named", ErrInvalidConfig)
	}
	vars := make([]string, len(tiers))
	for i, name := range tiers {
		if err := validTierName(normalizeTier(name)); err != nil {
			return nil, fmt.Errorf("%w: tier %q: %v", ErrInvalidConfig, name, err)
		}
		vars[i] = EnvVar(name)
	}
	return readPrices(lookup, tiers, vars)
}

// PricesFromEnviron is [PricesFromEnv] for every tier found in environ, a
// list of "KEY=value" strings as returned by [os.Environ]: each variable
// PRICE_<TIER> defines tier <tier> (lower-cased), and PRICE_<TIER>_METERED
// its metered price. Every PRICE_ variable is taken to be a tier price, so
// keep other settings out of that prefix.
//
// An empty or malformed value, a metered price without its tier, or no
// PRICE_ variable at all is an error wrapping [ErrInvalidConfig] that names
// the variable and never holds its value.
func PricesFromEnviron(environ []string) (*Prices, error) {
	env := map[string]string{}
	var tiers, vars []string
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, EnvPrefix) {
			continue
		}
		if _, seen := env[k]; seen {
			continue // the first one counts, as for os.Getenv
		}
		env[k] = v
		rest, metered := strings.CutSuffix(strings.TrimPrefix(k, EnvPrefix), EnvMeteredSuffix)
		if err := validTierName(normalizeTier(rest)); err != nil {
			return nil, fmt.Errorf("%w: %s: tier name: %v", ErrInvalidConfig, k, err)
		}
		if !metered {
			tiers = append(tiers, rest)
			vars = append(vars, k)
		}
	}
	if len(tiers) == 0 {
		return nil, fmt.Errorf("%w: no %s<TIER> variable is set", ErrInvalidConfig, EnvPrefix)
	}
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if base, metered := strings.CutSuffix(k, EnvMeteredSuffix); metered && strings.HasPrefix(k, EnvPrefix) {
			if _, ok := env[base]; !ok {
				return nil, fmt.Errorf("%w: %s is set but %s is not", ErrInvalidConfig, k, base)
			}
		}
	}
	return readPrices(func(k string) (string, bool) { v, ok := env[k]; return v, ok }, tiers, vars)
}

// readPrices reads tiers[i]'s price ID from the variable vars[i] and its
// metered price ID from vars[i]+EnvMeteredSuffix. Error messages name the
// variable, never its value: a misplaced secret key must not reach a log.
func readPrices(lookup func(string) (string, bool), tiers, vars []string) (*Prices, error) {
	list := make([]Tier, len(tiers))
	for i, name := range tiers {
		v := vars[i]
		price, ok := lookup(v)
		if !ok {
			return nil, fmt.Errorf("%w: %s is not set (the Stripe price ID of tier %q)", ErrInvalidConfig, v, normalizeTier(name))
		}
		if err := validPriceID(strings.TrimSpace(price)); err != nil {
			return nil, fmt.Errorf("%w: %s: price ID %v", ErrInvalidConfig, v, err)
		}
		list[i] = Tier{Name: name, PriceID: price}
		if metered, ok := lookup(v + EnvMeteredSuffix); ok {
			if err := validPriceID(strings.TrimSpace(metered)); err != nil {
				return nil, fmt.Errorf("%w: %s: price ID %v", ErrInvalidConfig, v+EnvMeteredSuffix, err)
			}
			list[i].MeteredPriceID = metered
		}
	}
	return NewPrices(list...)
}

// Tier returns the tier named name (case-insensitive), and whether it
// exists.
func (p *Prices) Tier(name string) (Tier, bool) {
	if p == nil {
		return Tier{}, false
	}
	t, ok := p.byName[normalizeTier(name)]
	return t, ok
}

// Tiers returns a new slice of the catalog's tier names, sorted.
func (p *Prices) Tiers() []string {
	if p == nil || len(p.names) == 0 {
		return nil
	}
	return append([]string(nil), p.names...)
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
