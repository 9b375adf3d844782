package webhooktest

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"time"

	"github.com/stripe/stripe-go/v76"
)

// EventOption changes one field of an event built by [NewEvent].
type EventOption func(*eventJSON)

// WithID sets the event's id. The default is "evt_test_" followed by 26
// random characters, so that events built separately never collide.
func WithID(id string) EventOption { return func(e *eventJSON) { e.ID = id } }

// WithAPIVersion sets the event's api_version. The default is the version
// stripe-go is pinned to, [stripe.APIVersion].
func WithAPIVersion(v string) EventOption { return func(e *eventJSON) { e.APIVersion = v } }

// WithCreated sets the event's created time. The default is the time
// NewEvent is called.
func WithCreated(t time.Time) EventOption { return func(e *eventJSON) { e.Created = t.Unix() } }

// WithLivemode sets the event's livemode. The default is false (test mode).
func WithLivemode(live bool) EventOption { return func(e *eventJSON) { e.Livemode = live } }

// WithAccount sets the connected account the event comes from. The default
// is none (the field is omitted).
func WithAccount(acct string) EventOption { return func(e *eventJSON) { e.Account = acct } }

// WithPreviousAttributes sets data.previous_attributes, as on *.updated
// events. The default is none (the field is omitted).
func WithPreviousAttributes(prev map[string]any) EventOption {
	return func(e *eventJSON) { e.Data.PreviousAttributes = prev }
}

// eventJSON is the shape of a Stripe event as delivered to an endpoint.
type eventJSON struct {
	ID              string           `json:"id"`
	Object          string           `json:"object"`
	Account         string           `json:"account,omitempty"`
	APIVersion      string           `json:"api_version"`
	Created         int64            `json:"created"`
	Data            eventDataJSON    `json:"data"`
	Livemode        bool             `json:"livemode"`
	PendingWebhooks int64            `json:"pending_webhooks"`
	Request         eventRequestRaw  `json:"request"`
	Type            stripe.EventType `json:"type"`
}

type eventDataJSON struct {
	Object             json.RawMessage `json:"object"`
	PreviousAttributes map[string]any  `json:"previous_attributes,omitempty"`
}

type eventRequestRaw struct {
	ID             *string `json:"id"`
	IdempotencyKey *string `json:"idempotency_key"`
}

// NewEvent returns the JSON payload of a Stripe event of type typ whose
// data.object is obj, shaped like the events Stripe delivers: id, object
// "event", api_version, created, data.object, livemode, pending_webhooks,
// request and type.
//
// obj may be a []byte or [json.RawMessage] holding the object's JSON (for
// example a response of stripe-mock), or any value that [json.Marshal]
// encodes to a JSON object, such as a map or a stripe-go type.
//
// NewEvent panics when obj is not a JSON object, like
// [net/http/httptest.NewRequest] panics on invalid input: it is meant for
// tests.
func NewEvent(typ stripe.EventType, obj any, opts ...EventOption) []byte {
	var raw []byte
	switch o := obj.(type) {
	case []byte:
		raw = o
	case json.RawMessage:
		raw = o
	default:
		b, err := json.Marshal(obj)
		if err != nil {
			panic(fmt.Sprintf("webhooktest: NewEvent: encode object: %v", err))
		}
		raw = b
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(raw, &probe); err != nil || probe == nil {
		panic("webhooktest: NewEvent: the object is not a JSON object")
	}
	e := eventJSON{
		ID:              "evt_test_" + rand.Text(),
		Object:          "event",
		APIVersion:      stripe.APIVersion,
		Created:         time.Now().Unix(),
		Data:            eventDataJSON{Object: raw},
		PendingWebhooks: 1,
		Type:            typ,
	}
	for _, opt := range opts {
		opt(&e)
	}
	b, err := json.Marshal(e)
	if err != nil {
		panic(fmt.Sprintf("webhooktest: NewEvent: %v", err))
	}
	return b
}

// EventID returns the id of an event payload, or "" when it has none.
func EventID(payload []byte) string {
	var e struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(payload, &e)
	return e.ID
}
