package billing_test

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/billkit/billkit/internal/testserver"
	"github.com/billkit/billkit/webhook/webhooktest"
)

// A shape is one Stripe API version's rendering of the objects billkit
// reads. Its objects are stripe-mock's own fixtures of that version, in
// which the tests set only the values they need, where the fixture has
// them: a fixture with top-level current_period_* gets the period there,
// one whose items carry it gets it on the items; an invoice with a parent
// names its subscription under parent.subscription_details, and so on. No
// field is added that the fixture's version does not have.
type shape struct {
	// Name names the shape in subtests.
	Name string
	// APIVersion is the api_version of the shape's events.
	APIVersion string
	// Expand renders customers and subscriptions as expanded objects
	// instead of IDs.
	Expand bool

	fixSub, fixInv, fixCS map[string]any // the fixtures; never modified
}

// The stripe-mock fixtures, read once per test binary.
var fixtures struct {
	sync.Mutex
	byVersion map[string][3]map[string]any
}

// loadFixtures returns stripe-mock version's subscription, invoice and
// checkout session, as its server answers GETs of them.
func loadFixtures(t testing.TB, version string) [3]map[string]any {
	t.Helper()
	fixtures.Lock()
	defer fixtures.Unlock()
	if f, ok := fixtures.byVersion[version]; ok {
		return f
	}
	sm := testserver.StartStripeMock(t, version)
	var f [3]map[string]any
	for i, path := range []string{"/v1/subscriptions/sub_123", "/v1/invoices/in_123", "/v1/checkout/sessions/cs_123"} {
		f[i] = testserver.Object(t, sm.URL, path)
	}
	if fixtures.byVersion == nil {
		fixtures.byVersion = map[string][3]map[string]any{}
	}
	fixtures.byVersion[version] = f
	return f
}

// Stripe API versions of the shapes.
const (
	// apiV76 is stripe-go v76's version, in which stripe-mock v0.162.0's
	// fixtures are rendered (top-level periods, invoice.subscription).
	apiV76 = "2023-10-16"
	// apiDahlia is stripe-mock v0.203.0's version: basil's item periods,
	// invoice parents and line pricing, and what came after.
	apiDahlia = "2026-08-26.dahlia"
)

// shapes returns every shape the lifecycle must read: the 2023-10-16
// shape, the newest shape, and the newest with expanded references.
func shapes(t testing.TB) []shape {
	t.Helper()
	old := loadFixtures(t, testserver.StripeMockUsageRecords)
	cur := loadFixtures(t, testserver.StripeMockMeterEvents)
	return []shape{
		{Name: "2023-10-16", APIVersion: apiV76, fixSub: old[0], fixInv: old[1], fixCS: old[2]},
		{Name: "dahlia", APIVersion: apiDahlia, fixSub: cur[0], fixInv: cur[1], fixCS: cur[2]},
		{Name: "dahlia-expanded", APIVersion: apiDahlia, Expand: true, fixSub: cur[0], fixInv: cur[1], fixCS: cur[2]},
	}
}

// newest returns the newest shape.
func newest(t testing.TB) shape { return shapes(t)[1] }

// oldest returns the 2023-10-16 shape.
func oldest(t testing.TB) shape { return shapes(t)[0] }

// event returns a signed-ready event of the shape's API version.
func (sh shape) event(id string, typ stripe.EventType, obj any, at time.Time) []byte {
	return webhooktest.NewEvent(typ, obj, webhooktest.WithID(id), webhooktest.WithCreated(at),
		webhooktest.WithAPIVersion(sh.APIVersion))
}

func (sh shape) ref(id, object string) any {
	if sh.Expand && id != "" {
		return map[string]any{"id": id, "object": object}
	}
	return id
}

// clone deep-copies a JSON value.
func clone[T any](v T) T {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	var out T
	if err := json.Unmarshal(b, &out); err != nil {
		panic(err)
	}
	return out
}

func has(o map[string]any, key string) bool { _, ok := o[key]; return ok }

// firstOf returns the first element of the fixture list o[key].data.
func firstOf(o map[string]any, key string) map[string]any {
	l, _ := o[key].(map[string]any)
	d, _ := l["data"].([]any)
	if len(d) == 0 {
		panic("fixture has no " + key)
	}
	return clone(d[0].(map[string]any))
}

// sub describes a subscription.
type sub struct {
	ID, Customer, Subject string
	Status                string
	Price                 string   // licensed price; default price_pro
	Metered               bool     // add the metered item
	MoreMetered           []string // add an item "si_<price>" of each of these metered prices
	Start, End            time.Time
	NoMetadata            bool
}

// sub renders s in the shape.
func (sh shape) sub(s sub) map[string]any {
	if s.ID == "" {
		s.ID = "sub_1"
	}
	if s.Customer == "" {
		s.Customer = "cus_1"
	}
	if s.Subject == "" {
		s.Subject = "alice"
	}
	if s.Price == "" {
		s.Price = "price_pro"
	}
	if s.Start.IsZero() {
		s.Start, s.End = t0, t0.AddDate(0, 1, 0)
	}
	o := clone(sh.fixSub)
	o["id"], o["customer"], o["status"] = s.ID, sh.ref(s.Customer, "customer"), s.Status
	meta := map[string]any{"billkit_subject": s.Subject, "billkit_tier": "pro"}
	if s.NoMetadata {
		meta = map[string]any{}
	}
	o["metadata"] = meta
	if has(o, "current_period_start") {
		o["current_period_start"], o["current_period_end"] = s.Start.Unix(), s.End.Unix()
	}
	base := firstOf(o, "items")
	item := func(id, price, usage string) map[string]any {
		it := clone(base)
		it["id"], it["subscription"] = id, s.ID
		p, _ := it["price"].(map[string]any)
		if p == nil {
			p = map[string]any{"object": "price"}
		}
		p["id"] = price
		if r, ok := p["recurring"].(map[string]any); ok {
			r["usage_type"] = usage
		}
		it["price"] = p
		if pl, ok := it["plan"].(map[string]any); ok {
			pl["id"], pl["usage_type"] = price, usage
		}
		if has(it, "current_period_start") {
			it["current_period_start"], it["current_period_end"] = s.Start.Unix(), s.End.Unix()
		}
		return it
	}
	items := []any{item("si_licensed", s.Price, "licensed")}
	if s.Metered {
		items = append(items, item("si_metered", "price_pro_metered", "metered"))
	}
	for _, price := range s.MoreMetered {
		items = append(items, item("si_"+price, price, "metered"))
	}
	o["items"].(map[string]any)["data"] = items
	return o
}

// inv describes a subscription's invoice.
type inv struct {
	ID, Sub, Customer, Subject string
	Price                      string // the line's price; default price_pro
	FinalizedAt                time.Time
	NoMetadata                 bool
}

// inv renders i in the shape.
func (sh shape) inv(i inv) map[string]any {
	if i.ID == "" {
		i.ID = "in_1"
	}
	if i.Sub == "" {
		i.Sub = "sub_1"
	}
	if i.Customer == "" {
		i.Customer = "cus_1"
	}
	if i.Subject == "" {
		i.Subject = "alice"
	}
	if i.Price == "" {
		i.Price = "price_pro"
	}
	meta := map[string]any{"billkit_subject": i.Subject}
	if i.NoMetadata {
		meta = map[string]any{}
	}
	o := clone(sh.fixInv)
	o["id"], o["customer"], o["billing_reason"] = i.ID, sh.ref(i.Customer, "customer"), "subscription_cycle"
	line := firstOf(o, "lines")
	line["invoice"] = i.ID
	line["period"] = map[string]any{"start": t0.Unix(), "end": t0.AddDate(0, 1, 0).Unix()}
	if has(o, "parent") {
		// basil on: the subscription under parent, the line's price under
		// pricing and its subscription item under parent.
		o["parent"] = map[string]any{"type": "subscription_details", "quote_details": nil,
			"subscription_details": map[string]any{"subscription": sh.ref(i.Sub, "subscription"), "metadata": meta}}
		line["pricing"] = map[string]any{"type": "price_details", "unit_amount_decimal": "2000",
			"price_details": map[string]any{"price": i.Price, "product": "prod_billkit"}}
		line["parent"] = map[string]any{"type": "subscription_item_details", "invoice_item_details": nil,
			"subscription_item_details": map[string]any{"subscription": i.Sub, "subscription_item": "si_licensed",
				"invoice_item": nil, "proration": false, "proration_details": map[string]any{"credited_items": nil}}}
	} else {
		o["subscription"] = sh.ref(i.Sub, "subscription")
		o["subscription_details"] = map[string]any{"metadata": meta}
		p, _ := line["price"].(map[string]any)
		if p == nil {
			p = map[string]any{"object": "price"}
		}
		p["id"], p["type"] = i.Price, "recurring"
		line["price"], line["subscription"], line["subscription_item"], line["type"] = p, i.Sub, "si_licensed", "subscription"
	}
	o["lines"].(map[string]any)["data"] = []any{line}
	if !i.FinalizedAt.IsZero() {
		st, _ := o["status_transitions"].(map[string]any)
		if st == nil {
			st = map[string]any{}
		}
		st["finalized_at"] = i.FinalizedAt.Unix()
		o["status_transitions"] = st
	}
	return o
}

// session renders a completed Checkout Session of subject in the shape.
func (sh shape) session(subject, customer, subID string) map[string]any {
	o := clone(sh.fixCS)
	o["id"], o["mode"], o["status"] = "cs_"+subject, "subscription", "complete"
	o["client_reference_id"], o["customer"] = subject, sh.ref(customer, "customer")
	o["subscription"] = sh.ref(subID, "subscription")
	if subID == "" {
		o["subscription"] = nil
	}
	o["metadata"] = map[string]any{"billkit_subject": subject, "billkit_tier": "pro"}
	return o
}

// forShapes runs f as a parallel subtest for every shape.
func forShapes(t *testing.T, f func(t *testing.T, sh shape)) {
	t.Helper()
	for _, sh := range shapes(t) {
		t.Run(sh.Name, func(t *testing.T) {
			t.Parallel()
			f(t, sh)
		})
	}
}
