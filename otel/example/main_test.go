package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/billkit/billkit/examples/server/app"
	"github.com/billkit/billkit/internal/testserver"
	"github.com/billkit/billkit/webhook/webhooktest"
)

// dahlia is the API version of stripe-mock v0.203.0's objects.
const dahlia = "2026-08-26.dahlia"

// TestMetricsAfterLifecycle runs the program as a user would, against
// stripe-mock: a few requests, a subscription's lifecycle through the
// webhook endpoint, a forged delivery, and the usage reporter's meter
// events; then it scrapes /metrics and finds a series for each outcome,
// and no subject in any of them.
func TestMetricsAfterLifecycle(t *testing.T) {
	mock := testserver.StartStripeMock(t, testserver.StripeMockMeterEvents)
	env := []string{
		"ADDR=127.0.0.1:0",
		"STRIPE_SECRET_KEY=sk_test_metrics",
		"STRIPE_API_BASE=" + mock.URL,
		"USAGE_REPORT_INTERVAL=100ms",
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, nil, env, outW, io.Discard)
		outW.Close()
	}()
	printed := map[string]string{}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ": ")
		if k, v, ok := strings.Cut(sc.Text(), "listening on "); ok && k == "" {
			printed["addr"] = v
			break
		}
		printed[k] = v
	}
	go io.Copy(io.Discard, out)
	base, key, secret := "http://"+printed["addr"], printed["demo api key"], printed["webhook secret"]
	if printed["addr"] == "" || key == "" || secret == "" {
		t.Fatalf("the program printed %v, want its address, API key and webhook secret", printed)
	}

	call := func(method, path string, body []byte, header map[string]string) int {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	hello := func(want int) {
		t.Helper()
		if got := call("GET", "/v1/hello", nil, map[string]string{"Authorization": "Bearer " + key}); got != want {
			t.Fatalf("GET /v1/hello answered %d, want %d", got, want)
		}
	}
	deliver := func(payload []byte, signWith string, want int) {
		t.Helper()
		h := map[string]string{"Content-Type": "application/json",
			webhooktest.SignatureHeader: webhooktest.Sign(signWith, payload, time.Now())}
		if got := call("POST", "/billing/webhook", payload, h); got != want {
			t.Fatalf("webhook answered %d, want %d", got, want)
		}
	}

	hello(http.StatusPaymentRequired) // no plan yet

	// The subscription: stripe-mock's own fixture, of its API version,
	// with the demo pro plan's price, the demo subject and a current
	// period.
	cfg, err := app.ConfigFromEnv(nil)
	if err != nil {
		t.Fatal(err)
	}
	pro, ok := cfg.Plans.ByTier("pro")
	if !ok {
		t.Fatal("the demo plans have no pro tier")
	}
	now := time.Now()
	sub := subscription(t, mock.URL, pro.PriceID, now.Add(-time.Hour), now.AddDate(0, 1, 0))
	created := webhooktest.NewEvent("customer.subscription.created", sub,
		webhooktest.WithID("evt_metrics_1"), webhooktest.WithAPIVersion(dahlia), webhooktest.WithCreated(now))
	deliver(created, secret, http.StatusOK)
	deliver(created, secret, http.StatusOK)                 // a duplicate delivery
	deliver(created, "whsec_forged", http.StatusBadRequest) // a forged one
	for range 3 {
		hello(http.StatusOK)
	}
	checkoutBody := []byte(`{"tier":"pro"}`)
	if got := call("POST", "/billing/checkout", checkoutBody, map[string]string{"Authorization": "Bearer " + key,
		"Content-Type": "application/json"}); got != http.StatusOK {
		t.Fatalf("POST /billing/checkout answered %d, want 200", got)
	}

	// The reporter sends the counted requests as meter events.
	want := []series{
		{"billkit_quota_decisions_total", "billkit_outcome=allowed,billkit_plan=pro,billkit_meter=requests"},
		{"billkit_quota_decisions_total", "billkit_outcome=no_plan,billkit_meter=requests"},
		{"billkit_quota_decision_duration_seconds_bucket", "billkit_outcome=allowed"},
		{"billkit_webhook_deliveries_total", "billkit_outcome=handled,http_response_status_code=200,stripe_event_type=customer.subscription.created"},
		{"billkit_webhook_deliveries_total", "billkit_outcome=duplicate,http_response_status_code=200,stripe_event_type=customer.subscription.created"},
		{"billkit_webhook_deliveries_total", "billkit_outcome=bad_signature,http_response_status_code=400"},
		{"billkit_webhook_delivery_duration_seconds_count", "billkit_outcome=handled"},
		{"billkit_billing_events_total", "billkit_outcome=applied,stripe_event_type=customer.subscription.created"},
		{"billkit_billing_entitlement_changes_total", "billkit_entitlement_previous_status=none,billkit_entitlement_status=active,billkit_plan=pro"},
		{"billkit_billing_reconcile_runs_total", "billkit_outcome=ok"},
		{"billkit_usage_reports_total", "billkit_outcome=reported,billkit_plan=pro,billkit_meter=requests,billkit_sink=meter_events"},
		{"billkit_usage_reported_units_total", "billkit_plan=pro,billkit_meter=requests,billkit_sink=meter_events"},
		{"billkit_usage_pending_subjects", ""},
		{"billkit_stripe_requests_total", "http_request_method=POST,http_response_status_code=200,url_template=/v1/billing/meter_events"},
		{"billkit_stripe_requests_total", "http_request_method=GET,http_response_status_code=200,url_template=/v1/subscriptions"},
		{"billkit_stripe_requests_total", "http_request_method=POST,http_response_status_code=200,url_template=/v1/checkout/sessions"},
		{"billkit_checkout_requests_total", "billkit_operation=checkout,billkit_plan=pro,http_response_status_code=200"},
	}
	var text string
	deadline := time.Now().Add(30 * time.Second) // failure guard only
	for {
		text = scrape(t, base)
		if missing := missingSeries(text, want); len(missing) == 0 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks %d series:\n%s\n\n/metrics:\n%s", len(missing), strings.Join(missing, "\n"), billkitLines(text))
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, `"demo"`) || strings.Contains(line, key) || strings.Contains(line, "cus_") || strings.Contains(line, "evt_") {
			t.Errorf("a series names a subject, key, customer or event: %s", line)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(30 * time.Second): // failure guard only
		t.Fatal("the program did not stop")
	}
}

// subscription returns stripe-mock's subscription fixture made the demo
// subject's subscription to price over [start, end): the period goes
// where the fixture's version keeps it (top level or items).
func subscription(t *testing.T, mockURL, price string, start, end time.Time) map[string]any {
	t.Helper()
	sub := testserver.Object(t, mockURL, "/v1/subscriptions/sub_metrics")
	sub["id"], sub["customer"], sub["status"] = "sub_metrics", "cus_metrics", "active"
	sub["metadata"] = map[string]any{"billkit_subject": "demo", "billkit_tier": "pro"}
	if _, ok := sub["current_period_start"]; ok {
		sub["current_period_start"], sub["current_period_end"] = start.Unix(), end.Unix()
	}
	items, _ := sub["items"].(map[string]any)
	data, _ := items["data"].([]any)
	if len(data) == 0 {
		t.Fatalf("stripe-mock's subscription has no items: %v", sub)
	}
	item, _ := data[0].(map[string]any)
	p, _ := item["price"].(map[string]any)
	p["id"] = price
	if r, ok := p["recurring"].(map[string]any); ok {
		r["usage_type"] = "licensed"
	}
	if pl, ok := item["plan"].(map[string]any); ok {
		pl["id"], pl["usage_type"] = price, "licensed"
	}
	if _, ok := item["current_period_start"]; ok {
		item["current_period_start"], item["current_period_end"] = start.Unix(), end.Unix()
	}
	items["data"] = []any{item}
	return sub
}

func scrape(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d, %v", resp.StatusCode, err)
	}
	return string(b)
}

// series names a Prometheus series: its metric name and labels it must
// have, as comma-separated name=value pairs (other labels may be there).
type series struct{ name, labels string }

func (s series) String() string { return s.name + "{" + s.labels + "}" }

// missingSeries returns the series of want that no line of text has.
func missingSeries(text string, want []series) []string {
	var missing []string
	for _, w := range want {
		found := false
		for _, line := range strings.Split(text, "\n") {
			if name, labels, ok := parseLine(line); ok && name == w.name && hasLabels(labels, w.labels) {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, w.String())
		}
	}
	return missing
}

// parseLine splits a sample line of the Prometheus text format into its
// metric name and labels. Label values here hold no escaped quotes.
func parseLine(line string) (string, map[string]string, bool) {
	if line == "" || line[0] == '#' {
		return "", nil, false
	}
	name, rest, ok := strings.Cut(line, "{")
	if !ok {
		name, _, _ = strings.Cut(line, " ")
		return name, map[string]string{}, true
	}
	body, _, ok := strings.Cut(rest, "} ")
	if !ok {
		return "", nil, false
	}
	labels := map[string]string{}
	for _, pair := range strings.Split(body, "\",") {
		k, v, _ := strings.Cut(pair, "=\"")
		labels[k] = strings.TrimSuffix(v, "\"")
	}
	return name, labels, true
}

func hasLabels(have map[string]string, want string) bool {
	if want == "" {
		return true
	}
	for _, pair := range strings.Split(want, ",") {
		k, v, _ := strings.Cut(pair, "=")
		if have[k] != v {
			return false
		}
	}
	return true
}

func billkitLines(text string) string {
	var b strings.Builder
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "billkit_") {
			fmt.Fprintln(&b, l)
		}
	}
	return b.String()
}
