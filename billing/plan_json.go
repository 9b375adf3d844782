package billing

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// planJSON is the JSON form of a plan.
type planJSON struct {
	Tier           string      `json:"tier"`
	PriceID        string      `json:"price_id"`
	Included       int64       `json:"included"`
	Soft           int64       `json:"soft"`
	Hard           int64       `json:"hard"`
	Overage        bool        `json:"overage"`
	MeteredPriceID string      `json:"metered_price_id"`
	MeterEventName string      `json:"meter_event_name"`
	Interval       string      `json:"interval"`
	Bill           string      `json:"bill"`
	Features       []string    `json:"features"`
	Meters         []meterJSON `json:"meters"`
}

// meterJSON is the JSON form of a meter.
type meterJSON struct {
	Name           string `json:"name"`
	Included       int64  `json:"included"`
	Soft           int64  `json:"soft"`
	Hard           int64  `json:"hard"`
	Overage        bool   `json:"overage"`
	MeteredPriceID string `json:"metered_price_id"`
	MeterEventName string `json:"meter_event_name"`
	Bill           string `json:"bill"`
}

var jsonField = map[string]string{
	"Tier": "tier", "PriceID": "price_id", "Included": "included", "Soft": "soft", "Hard": "hard",
	"Overage": "overage", "MeteredPriceID": "metered_price_id", "MeterEventName": "meter_event_name", "Interval": "interval",
	"OverageOnly": "bill", "Features": "features", "Name": "name",
}

// PlansFromJSON builds the catalog from JSON of the form
//
//	{"plans": [{"tier": "pro", "price_id": "price_123", "included": 10000,
//	            "soft": 8000, "hard": 12000, "overage": true,
//	            "metered_price_id": "price_456", "meter_event_name": "api_requests",
//	            "interval": "month", "bill": "overage", "features": ["sso"]}]}
//
// for a plan of one meter, "requests". A plan of several meters lists them
// under "meters" instead, each with the keys above from "included" to
// "bill" and a "name":
//
//	{"tier": "ai", "price_id": "price_ai", "features": ["sso", "export"],
//	 "meters": [{"name": "requests", "included": 1000},
//	            {"name": "tokens", "included": 50000, "hard": 80000, "overage": true,
//	             "meter_event_name": "ai_tokens", "bill": "overage"}]}
//
// Unknown keys are errors. Errors wrap [ErrInvalidConfig] and name the JSON
// field, as in plans[1].hard or plans[0].meters[1].name.
func PlansFromJSON(data []byte) (*Plans, error) {
	var doc struct {
		Plans []planJSON `json:"plans"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	plans := make([]Plan, len(doc.Plans))
	for i, pj := range doc.Plans {
		iv, err := parseInterval(pj.Interval)
		if err != nil {
			return nil, fmt.Errorf("%w: plans[%d].interval: %v", ErrInvalidConfig, i, err)
		}
		bill, err := parseBill(pj.Bill)
		if err != nil {
			return nil, fmt.Errorf("%w: plans[%d].bill: %v", ErrInvalidConfig, i, err)
		}
		p := Plan{Tier: pj.Tier, PriceID: pj.PriceID, Included: pj.Included, Soft: pj.Soft, Hard: pj.Hard,
			Overage: pj.Overage, MeteredPriceID: pj.MeteredPriceID, MeterEventName: pj.MeterEventName, Interval: iv,
			OverageOnly: bill, Features: pj.Features}
		for j, mj := range pj.Meters {
			bill, err := parseBill(mj.Bill)
			if err != nil {
				return nil, fmt.Errorf("%w: plans[%d].meters[%d].bill: %v", ErrInvalidConfig, i, j, err)
			}
			p.Meters = append(p.Meters, Meter{Name: mj.Name, Included: mj.Included, Soft: mj.Soft, Hard: mj.Hard,
				Overage: mj.Overage, OverageOnly: bill, MeteredPriceID: mj.MeteredPriceID, MeterEventName: mj.MeterEventName})
		}
		plans[i] = p
	}
	return newPlans(plans, func(i, m int, f string) string {
		if m >= 0 {
			return fmt.Sprintf("plans[%d].meters[%d].%s", i, m, jsonField[f])
		}
		return fmt.Sprintf("plans[%d].%s", i, jsonField[f])
	})
}
