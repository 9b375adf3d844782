package usage

import (
	"encoding/json"
	"errors"
)

// ErrLeaseBusy is returned by [Reporter.Flush] when another reporter kept
// the subject's lease for longer than the flush could wait.
var ErrLeaseBusy = errors.New("billing: usage of subject is being reported elsewhere")

var (
	// errWatermarkMoved reports that a subject's watermark changed under a
	// reporter that believed it held the subject's lease (the lease
	// expired): nothing was lost, the next pass reports the rest.
	errWatermarkMoved = errors.New("billing: watermark moved by another reporter")
	// errReportInvalid is returned by a sink for a report Stripe could
	// not accept as built, such as one for a subject without a Stripe
	// customer or metered subscription item.
	errReportInvalid = errors.New("billing: invalid usage report")
)

// customerOf returns the customer of a Stripe object's JSON (an ID or an
// expanded customer), "" when it has none or it cannot be read.
func customerOf(raw []byte) string {
	var o struct {
		Customer json.RawMessage `json:"customer"`
	}
	if json.Unmarshal(raw, &o) != nil {
		return ""
	}
	var id string
	if json.Unmarshal(o.Customer, &id) == nil {
		return id
	}
	var obj struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(o.Customer, &obj) == nil {
		return obj.ID
	}
	return ""
}
