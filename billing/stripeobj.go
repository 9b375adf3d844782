package billing

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/billkit/billkit/quota"
)

// This file is the one place where billkit reads Stripe objects. Stripe
// renders an event's object in the API version of the webhook endpoint (by
// default the account's version), which is not the 2023-10-16 version
// stripe-go v76 models, so billkit reads the raw JSON of an object into
// views that accept every shape from 2023-10-16 to the newest:
//
//	subscription period    current_period_start/end (until 2025-02-24.acacia)
//	                       or items.data[].current_period_start/end
//	                       (2025-03-31.basil on); when items disagree, the
//	                       item of the plan's licensed price decides
//	invoice subscription   subscription (until acacia) or
//	                       parent.subscription_details.subscription (basil on)
//	invoice metadata       subscription_details.metadata or
//	                       parent.subscription_details.metadata
//	line price             price (until acacia) or
//	                       pricing.price_details.price (basil on)
//	line subscription item subscription_item or
//	                       parent.subscription_item_details.subscription_item
//	customer, subscription an ID string or an expanded object with an "id"
//	active feature         entitlements.data[].lookup_key of an
//	                       active_entitlement_summary (or of a list of
//	                       active entitlements), else the lookup_key of
//	                       its expanded feature
//
// A field of a known name but an unexpected JSON type makes the object
// unreadable (an error), never a silently zero value.

// stripeID is a reference to a Stripe object: its ID, or the expanded
// object, whose "id" it keeps. null and absence read as "".
type stripeID string

func (s *stripeID) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || bytes.Equal(b, []byte("null")):
		*s = ""
		return nil
	case b[0] == '"':
		var id string
		if err := json.Unmarshal(b, &id); err != nil {
			return err
		}
		*s = stripeID(id)
		return nil
	case b[0] == '{':
		var obj struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(b, &obj); err != nil {
			return err
		}
		*s = stripeID(obj.ID)
		return nil
	}
	return fmt.Errorf("want an ID or an object, got %.20s", b)
}

// unixPeriod is a pair of Unix timestamps, either may be absent.
type unixPeriod struct {
	Start, End *int64
}

func (u unixPeriod) period() quota.Period {
	if u.Start == nil || u.End == nil || *u.End <= *u.Start || *u.Start <= 0 {
		return quota.Period{}
	}
	return quota.Period{Start: time.Unix(*u.Start, 0).UTC(), End: time.Unix(*u.End, 0).UTC()}
}

// subscriptionView is what billkit reads from a subscription.
type subscriptionView struct {
	ID         string
	CustomerID string
	Status     Status
	Metadata   map[string]string
	// Period is the top-level current period (API versions before basil);
	// zero when absent.
	Period quota.Period
	Items  []itemView
}

// itemView is a subscription item.
type itemView struct {
	ID      string
	PriceID string
	// Period is the item's current period (basil on); zero when absent.
	Period quota.Period
}

// invoiceView is what billkit reads from an invoice.
type invoiceView struct {
	ID             string
	CustomerID     string
	SubscriptionID string
	// SubscriptionMetadata is the subscription's metadata as the invoice
	// carries it (subscription_details.metadata).
	SubscriptionMetadata map[string]string
	// BillingReason is the invoice's billing_reason ("subscription_cycle",
	// "manual", ...).
	BillingReason string
	FinalizedAt   time.Time
	Lines         []lineView
}

// lineView is an invoice line item.
type lineView struct {
	PriceID            string
	SubscriptionID     string
	SubscriptionItemID string
	Period             quota.Period
}

// checkoutView is what billkit reads from a Checkout Session.
type checkoutView struct {
	ID                string
	Mode              string
	ClientReferenceID string
	CustomerID        string
	SubscriptionID    string
	Metadata          map[string]string
}

// errObjectType reports an object of another type than the one expected.
var errObjectType = errors.New("object of another type")

// readHeader checks that raw is a JSON object of type object with an id.
func readHeader(raw []byte, object string) error {
	var probe struct {
		Object string `json:"object"`
		ID     string `json:"id"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil || probe.Object != object {
		return fmt.Errorf("%w: want %q, got %q", errObjectType, object, probe.Object)
	}
	if probe.ID == "" {
		return fmt.Errorf("%s without an id", object)
	}
	return nil
}

func readSubscription(raw []byte) (subscriptionView, error) {
	if err := readHeader(raw, "subscription"); err != nil {
		return subscriptionView{}, err
	}
	var s struct {
		ID                 string            `json:"id"`
		Customer           stripeID          `json:"customer"`
		Status             string            `json:"status"`
		Metadata           map[string]string `json:"metadata"`
		CurrentPeriodStart *int64            `json:"current_period_start"`
		CurrentPeriodEnd   *int64            `json:"current_period_end"`
		Items              *struct {
			Data []*struct {
				ID                 string   `json:"id"`
				Price              stripeID `json:"price"`
				Plan               stripeID `json:"plan"`
				CurrentPeriodStart *int64   `json:"current_period_start"`
				CurrentPeriodEnd   *int64   `json:"current_period_end"`
			} `json:"data"`
		} `json:"items"`
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return subscriptionView{}, fmt.Errorf("subscription: %w", err)
	}
	v := subscriptionView{
		ID: s.ID, CustomerID: string(s.Customer), Status: Status(s.Status), Metadata: s.Metadata,
		Period: unixPeriod{s.CurrentPeriodStart, s.CurrentPeriodEnd}.period(),
	}
	if s.Items != nil {
		for _, it := range s.Items.Data {
			if it == nil {
				continue
			}
			price := string(it.Price)
			if price == "" {
				price = string(it.Plan) // a legacy plan's ID is its price's
			}
			v.Items = append(v.Items, itemView{ID: it.ID, PriceID: price,
				Period: unixPeriod{it.CurrentPeriodStart, it.CurrentPeriodEnd}.period()})
		}
	}
	return v, nil
}

// periodFor returns the subscription's current period for the item whose
// price is priceID: the top-level period when the object has one, else that
// item's period, else the period all items agree on. It is zero when none
// is known.
func (v subscriptionView) periodFor(priceID string) quota.Period {
	if !v.Period.IsZero() {
		return v.Period
	}
	for _, it := range v.Items {
		if it.PriceID == priceID && priceID != "" && !it.Period.IsZero() {
			return it.Period
		}
	}
	var p quota.Period
	for _, it := range v.Items {
		switch {
		case it.Period.IsZero():
		case p.IsZero():
			p = it.Period
		case p != it.Period:
			return quota.Period{} // items disagree and none is the plan's
		}
	}
	return p
}

func readInvoice(raw []byte) (invoiceView, error) {
	if err := readHeader(raw, "invoice"); err != nil {
		return invoiceView{}, err
	}
	type details struct {
		Subscription stripeID          `json:"subscription"`
		Metadata     map[string]string `json:"metadata"`
	}
	var in struct {
		ID                  string   `json:"id"`
		Customer            stripeID `json:"customer"`
		Subscription        stripeID `json:"subscription"`
		SubscriptionDetails *details `json:"subscription_details"`
		BillingReason       string   `json:"billing_reason"`
		Parent              *struct {
			SubscriptionDetails *details `json:"subscription_details"`
		} `json:"parent"`
		StatusTransitions *struct {
			FinalizedAt *int64 `json:"finalized_at"`
		} `json:"status_transitions"`
		Lines *struct {
			Data []*struct {
				Price            stripeID `json:"price"`
				Subscription     stripeID `json:"subscription"`
				SubscriptionItem stripeID `json:"subscription_item"`
				Period           *struct {
					Start *int64 `json:"start"`
					End   *int64 `json:"end"`
				} `json:"period"`
				Pricing *struct {
					PriceDetails *struct {
						Price stripeID `json:"price"`
					} `json:"price_details"`
				} `json:"pricing"`
				Parent *struct {
					SubscriptionItemDetails *struct {
						Subscription     stripeID `json:"subscription"`
						SubscriptionItem stripeID `json:"subscription_item"`
					} `json:"subscription_item_details"`
				} `json:"parent"`
			} `json:"data"`
		} `json:"lines"`
	}
	if err := json.Unmarshal(raw, &in); err != nil {
		return invoiceView{}, fmt.Errorf("invoice: %w", err)
	}
	v := invoiceView{ID: in.ID, CustomerID: string(in.Customer), SubscriptionID: string(in.Subscription),
		BillingReason: in.BillingReason}
	if d := in.SubscriptionDetails; d != nil {
		v.SubscriptionMetadata = d.Metadata
	}
	if in.Parent != nil && in.Parent.SubscriptionDetails != nil {
		d := in.Parent.SubscriptionDetails
		if v.SubscriptionID == "" {
			v.SubscriptionID = string(d.Subscription)
		}
		if len(v.SubscriptionMetadata) == 0 {
			v.SubscriptionMetadata = d.Metadata
		}
	}
	if st := in.StatusTransitions; st != nil && st.FinalizedAt != nil && *st.FinalizedAt > 0 {
		v.FinalizedAt = time.Unix(*st.FinalizedAt, 0).UTC()
	}
	if in.Lines != nil {
		for _, li := range in.Lines.Data {
			if li == nil {
				continue
			}
			l := lineView{PriceID: string(li.Price), SubscriptionID: string(li.Subscription),
				SubscriptionItemID: string(li.SubscriptionItem)}
			if l.PriceID == "" && li.Pricing != nil && li.Pricing.PriceDetails != nil {
				l.PriceID = string(li.Pricing.PriceDetails.Price)
			}
			if li.Parent != nil && li.Parent.SubscriptionItemDetails != nil {
				d := li.Parent.SubscriptionItemDetails
				if l.SubscriptionID == "" {
					l.SubscriptionID = string(d.Subscription)
				}
				if l.SubscriptionItemID == "" {
					l.SubscriptionItemID = string(d.SubscriptionItem)
				}
			}
			if li.Period != nil {
				l.Period = unixPeriod{li.Period.Start, li.Period.End}.period()
			}
			v.Lines = append(v.Lines, l)
		}
	}
	return v, nil
}

// aboutSubscription reports whether the invoice bills a subscription, even
// when the subscription's ID could not be read: its billing reason is a
// subscription's, or a line is a subscription item's.
func (v invoiceView) aboutSubscription() bool {
	if v.SubscriptionID != "" || strings.HasPrefix(v.BillingReason, "subscription") {
		return true
	}
	for _, l := range v.Lines {
		if l.SubscriptionID != "" || l.SubscriptionItemID != "" {
			return true
		}
	}
	return false
}

func readCheckoutSession(raw []byte) (checkoutView, error) {
	if err := readHeader(raw, "checkout.session"); err != nil {
		return checkoutView{}, err
	}
	var cs struct {
		ID                string            `json:"id"`
		Mode              string            `json:"mode"`
		ClientReferenceID *string           `json:"client_reference_id"`
		Customer          stripeID          `json:"customer"`
		Subscription      stripeID          `json:"subscription"`
		Metadata          map[string]string `json:"metadata"`
	}
	if err := json.Unmarshal(raw, &cs); err != nil {
		return checkoutView{}, fmt.Errorf("checkout session: %w", err)
	}
	v := checkoutView{ID: cs.ID, Mode: cs.Mode, CustomerID: string(cs.Customer),
		SubscriptionID: string(cs.Subscription), Metadata: cs.Metadata}
	if cs.ClientReferenceID != nil {
		v.ClientReferenceID = *cs.ClientReferenceID
	}
	return v, nil
}

// readCustomerID returns the customer of any object (an ID or an expanded
// customer), "" when it has none or it cannot be read.
func readCustomerID(raw []byte) string {
	var o struct {
		Customer stripeID `json:"customer"`
	}
	if json.Unmarshal(raw, &o) != nil {
		return ""
	}
	return string(o.Customer)
}

// featuresView is what billkit reads from an active_entitlement_summary
// or a page of a customer's active entitlements.
type featuresView struct {
	CustomerID string
	// Features are the lookup keys listed, sorted, without duplicates.
	Features []string
	// More is set when the list is incomplete (has_more): the rest must
	// be listed from the API.
	More bool
}

// objectSummary is the object type of an entitlements summary event.
const objectSummary = "entitlements.active_entitlement_summary"

// readEntitlementSummary reads an active_entitlement_summary: its customer
// and the lookup keys of its entitlements.data. An entitlement whose
// lookup key cannot be read makes the summary unreadable: a feature is
// never dropped in silence.
func readEntitlementSummary(raw []byte) (featuresView, error) {
	var s struct {
		Object       string          `json:"object"`
		Customer     stripeID        `json:"customer"`
		Entitlements json.RawMessage `json:"entitlements"`
	}
	if err := json.Unmarshal(raw, &s); err != nil || s.Object != objectSummary {
		if err == nil {
			err = fmt.Errorf("%w: want %q, got %q", errObjectType, objectSummary, s.Object)
		}
		return featuresView{}, err
	}
	if s.Customer == "" {
		return featuresView{}, errors.New("active entitlement summary without a customer")
	}
	if len(bytes.TrimSpace(s.Entitlements)) == 0 || bytes.Equal(bytes.TrimSpace(s.Entitlements), []byte("null")) {
		return featuresView{}, errors.New("active entitlement summary without entitlements")
	}
	v, err := readActiveEntitlements(s.Entitlements)
	if err != nil {
		return featuresView{}, fmt.Errorf("active entitlement summary: %w", err)
	}
	v.CustomerID = string(s.Customer)
	return v, nil
}

// readActiveEntitlements reads a list of active entitlements ("data" and
// "has_more"), as a summary embeds it and the API lists it.
func readActiveEntitlements(raw []byte) (featuresView, error) {
	var l struct {
		Data *[]*struct {
			LookupKey *string         `json:"lookup_key"`
			Feature   json.RawMessage `json:"feature"`
		} `json:"data"`
		HasMore bool `json:"has_more"`
	}
	if err := json.Unmarshal(raw, &l); err != nil {
		return featuresView{}, fmt.Errorf("entitlements: %w", err)
	}
	if l.Data == nil {
		return featuresView{}, errors.New("entitlements without data")
	}
	v := featuresView{More: l.HasMore}
	for _, it := range *l.Data {
		if it == nil {
			continue
		}
		key := ""
		if it.LookupKey != nil {
			key = *it.LookupKey
		}
		if f := bytes.TrimSpace(it.Feature); key == "" && len(f) > 0 && f[0] == '{' {
			var feat struct {
				LookupKey string `json:"lookup_key"`
			}
			if err := json.Unmarshal(f, &feat); err != nil {
				return featuresView{}, fmt.Errorf("entitlement feature: %w", err)
			}
			key = feat.LookupKey
		}
		if key == "" {
			return featuresView{}, errors.New("an active entitlement without a lookup key")
		}
		v.Features = append(v.Features, key)
	}
	slices.Sort(v.Features)
	v.Features = slices.Compact(v.Features)
	return v, nil
}
