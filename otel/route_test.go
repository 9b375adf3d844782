package billkitotel

import (
	"testing"

	"github.com/stripe/stripe-go/v76"
)

// TestRoute replaces the IDs of real Stripe paths, as stripe-go builds
// them, and keeps every resource and action name.
func TestRoute(t *testing.T) {
	t.Parallel()
	tests := []struct{ path, want string }{
		{"/v1/subscriptions/sub_1NxyzABCdefGHIjk", "/v1/subscriptions/{id}"},
		{"/v1/subscriptions/sub_1", "/v1/subscriptions/{id}"},
		{"/v1/subscriptions?status=all&limit=100", "/v1/subscriptions"},
		{"/v1/customers/cus_NffrFeUfNV2Hib", "/v1/customers/{id}"},
		{"/v1/customers/cus_ABC12345678/tax_ids/txi_1NuMB12LkdIwHu7ixIH2IpVF", "/v1/customers/{id}/tax_ids/{id}"},
		{"/v1/customers/search", "/v1/customers/search"},
		{"/v1/subscription_items/si_OQsS1Mxk4Z1Abc/usage_records", "/v1/subscription_items/{id}/usage_records"},
		{"/v1/subscription_items/si_OQsS1Mxk4Z1Abc/usage_record_summaries", "/v1/subscription_items/{id}/usage_record_summaries"},
		{"/v1/subscription_schedules/sub_sched_1Mr3YcLkdIwHu7ixYCFhXHNb/release", "/v1/subscription_schedules/{id}/release"},
		{"/v1/billing/meter_events", "/v1/billing/meter_events"},
		{"/v1/billing/meter_event_adjustments", "/v1/billing/meter_event_adjustments"},
		{"/v1/billing/meters/mtr_test_61Q8nQMqIFK9fRQmr41CMAXJrFdZ5MnA/event_summaries", "/v1/billing/meters/{id}/event_summaries"},
		{"/v1/billing_portal/sessions", "/v1/billing_portal/sessions"},
		{"/v1/billing_portal/configurations/bpc_1MrnZsLkdIwHu7ixNiQL1xPM", "/v1/billing_portal/configurations/{id}"},
		{"/v1/checkout/sessions", "/v1/checkout/sessions"},
		{"/v1/checkout/sessions/cs_test_a1B2c3D4e5F6g7H8i9J0/expire", "/v1/checkout/sessions/{id}/expire"},
		{"/v1/checkout/sessions/cs_test_a1B2c3D4e5F6g7H8i9J0/line_items", "/v1/checkout/sessions/{id}/line_items"},
		{"/v1/invoices/in_1MtHbELkdIwHu7ixl4OzzPMv/mark_uncollectible", "/v1/invoices/{id}/mark_uncollectible"},
		{"/v1/invoices/upcoming/lines", "/v1/invoices/upcoming/lines"},
		{"/v1/payment_method_configurations", "/v1/payment_method_configurations"},
		{"/v1/prices/price_1MoBy5LkdIwHu7ixZhnattbh", "/v1/prices/{id}"},
		{"/v1/events/evt_1NG8Du2eZvKYlo2CUI79vXWy", "/v1/events/{id}"},
		{"/v1/entitlements/active_entitlements", "/v1/entitlements/active_entitlements"},
		{"/v1/accounts/acct_1032D82eZvKYlo2C/capabilities/card_payments", "/v1/accounts/{id}/capabilities/card_payments"},
		{"/v1/test_helpers/test_clocks/clock_1MpDPRLkdIwHu7ix2d5t0ipv/advance", "/v1/test_helpers/test_clocks/{id}/advance"},
		{"/v1/quotes/qt_1Mr7wVLkdIwHu7ixpbs5Ex1z/pdf", "/v1/quotes/{id}/pdf"},
		// Custom and escaped IDs are IDs too.
		{"/v1/coupons/SUMMER25", "/v1/coupons/{id}"},
		{"/v1/coupons/gold-plan", "/v1/coupons/{id}"},
		{stripe.FormatURLPath("/v1/customers/%s", "a/b"), "/v1/customers/{id}"},
		{"/v2/core/events", "/v2/core/events"},
		{"", ""},
		{"/", "/"},
	}
	for _, tt := range tests {
		if got := route(tt.path); got != tt.want {
			t.Errorf("route(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

func TestIsID(t *testing.T) {
	t.Parallel()
	for _, seg := range []string{
		"sub_1NxyzABCdefGHIjk", "cus_ABC12345678", "si_OQsS1Mxk4Z1Abc", "in_1MtHbELkdIwHu7ixl4OzzPMv",
		"cs_test_a1B2c3D4e5F6g7H8i9J0", "evt_1NG8Du2eZvKYlo2CUI79vXWy", "price_1MoBy5LkdIwHu7ixZhnattbh", "sub_1",
	} {
		if !isID(seg) {
			t.Errorf("isID(%q) = false, want true", seg)
		}
	}
	for _, seg := range []string{
		"", "v1", "v2", "meter_events", "usage_records", "billing_portal", "subscription_items",
		"subscriptions", "customers", "payment_method_configurations", "mark_uncollectible", "test_helpers",
	} {
		if isID(seg) {
			t.Errorf("isID(%q) = true, want false", seg)
		}
	}
}

func TestLastResponse(t *testing.T) {
	t.Parallel()
	c := &stripe.Customer{}
	c.LastResponse = &stripe.APIResponse{StatusCode: 200, RequestID: "req_1"}
	s := &stripe.APIStream{}
	s.LastResponse = &stripe.StreamingAPIResponse{StatusCode: 201, RequestID: "req_2"}
	tests := []struct {
		v      any
		status int
		id     string
	}{
		{c, 200, "req_1"},
		{s, 201, "req_2"},
		{&stripe.Customer{}, 0, ""},
		{(*stripe.Customer)(nil), 0, ""},
		{nil, 0, ""},
		{stripe.Customer{}, 0, ""},
		{new(int), 0, ""},
		{&struct{ LastResponse string }{"x"}, 0, ""},
	}
	for i, tt := range tests {
		status, id := lastResponse(tt.v)
		if status != tt.status || id != tt.id {
			t.Errorf("%d: lastResponse(%T) = %d %q, want %d %q", i, tt.v, status, id, tt.status, tt.id)
		}
	}
}
