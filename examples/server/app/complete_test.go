package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/billkit/billkit/examples/server/internal/demo"
	"github.com/billkit/billkit/internal/fakeclock"
	"github.com/billkit/billkit/quota"
)

// startApp builds the app in process with vars added to its environment
// (the demo plans unless vars prices its own, an API key of subject alice,
// a webhook secret) on a fake clock, serves it with httptest, and returns
// it and a client of alice whose subscription is demo pro.
func startApp(t *testing.T, vars map[string]string) (*App, *testClient) {
	t.Helper()
	const (
		key    = "complete-key-0123456789abcdef"
		secret = "whsec_complete_test_secret"
	)
	environ := map[string]string{"API_KEYS": key + ":alice", "STRIPE_WEBHOOK_SECRET": secret}
	for k, v := range vars {
		environ[k] = v
	}
	cfg, err := ConfigFromEnv(env(environ))
	if err != nil {
		t.Fatal(err)
	}
	clk := fakeclock.New(time.Date(2026, 11, 3, 9, 0, 0, 0, time.UTC))
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	app, err := newApp(context.Background(), cfg, log, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	srv := httptest.NewServer(app.Handler())
	t.Cleanup(srv.Close)
	return app, &testClient{t: t, base: srv.URL, key: key, secret: secret, clock: clk, sub: demoSub("alice").WithDefaults(clk.Now())}
}

// toStarter moves c's subscription to the starter tier.
func (c *testClient) toStarter() {
	c.t.Helper()
	c.sub.Tier, c.sub.PriceID, c.sub.MeteredPriceID = "starter", demo.PriceStarter, ""
	c.send(demo.SubscriptionUpdated)
}

// meters returns GET /billing/usage's meters by name.
func (c *testClient) meters() map[string]map[string]any {
	c.t.Helper()
	out := map[string]map[string]any{}
	list, _ := c.usage()["meters"].([]any)
	for _, m := range list {
		m := m.(map[string]any)
		out[m["meter"].(string)] = m
	}
	return out
}

// wantMeter checks GET /billing/usage's meter: its used and reserved
// units, and its included units and limit (-1: null, no cap).
func (c *testClient) wantMeter(meter string, used, reserved, included, limit int64) {
	c.t.Helper()
	m, ok := c.meters()[meter]
	if !ok {
		c.t.Fatalf("/billing/usage lists no meter %s: %v", meter, c.usage()["meters"])
	}
	want := map[string]any{"meter": meter, "used": float64(used), "reserved": float64(reserved), "included": float64(included),
		"limit": float64(limit), "remaining": float64(max(limit-used-reserved, 0)), "reset": m["reset"]}
	if limit < 0 {
		want["limit"], want["remaining"] = nil, nil
	}
	if !reflect.DeepEqual(m, want) {
		c.t.Fatalf("/billing/usage meter %v, want %v", m, want)
	}
}

// completion calls POST /v1/complete with prompt and maxTokens (0: none),
// wants 200, and returns the response and the tokens it used.
func (c *testClient) completion(prompt string, maxTokens int) (response, int64) {
	c.t.Helper()
	body := fmt.Sprintf(`{"prompt":%q}`, prompt)
	if maxTokens > 0 {
		body = fmt.Sprintf(`{"prompt":%q,"max_tokens":%d}`, prompt, maxTokens)
	}
	r := c.complete(body, http.StatusOK, "")
	var got completionResponse
	if err := json.Unmarshal(r.Body, &got); err != nil {
		c.t.Fatalf("completion %s: %v", r.Body, err)
	}
	return r, got.Usage.TotalTokens
}

// jsonField returns the string member key of the JSON object b.
func jsonField(t *testing.T, b []byte, key string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("body %q: %v", b, err)
	}
	s, _ := m[key].(string)
	return s
}

// TestComplete walks POST /v1/complete on a pro plan with a small token
// cap: the RateLimit fields of both meters, tokens reserved before the
// handler (its most: the prompt and max_tokens) and counted as settled
// after it, a reservation that does not fit refused with 402 naming
// "tokens" while a smaller one passes, and the cap used exactly.
func TestComplete(t *testing.T) {
	t.Parallel()
	app, c := startApp(t, map[string]string{"PLAN_PRO_TOKENS_INCLUDED": "100", "PLAN_PRO_TOKENS_HARD": "150"})
	c.send(demo.SubscriptionCreated)
	c.wantMeter("tokens", 0, 0, 100, 150)

	// Two prompt tokens, a reply of 16 (8 per prompt token) within
	// max_tokens: 18 used, 102 reserved.
	r, used := c.completion("two words", 100)
	want := completionResponse{Model: demoModel, FinishReason: "stop", Usage: completionUsage{PromptTokens: 2, CompletionTokens: 16, TotalTokens: 18}}
	var got completionResponse
	if err := json.Unmarshal(r.Body, &got); err != nil {
		t.Fatal(err)
	}
	if words := len(strings.Fields(got.Reply)); words != 16 {
		t.Errorf("reply %q has %d tokens, want 16", got.Reply, words)
	}
	got.Reply = ""
	if got != want || used != 18 {
		t.Errorf("completion %+v, want %+v", got, want)
	}
	// The tokens member counts this request's reservation.
	wantRateLimit(t, r.Header, "requests", proHard, proHard-1)
	wantRateLimit(t, r.Header, "tokens", 150, 150-102)
	// The settle runs after the response; Close waits for it. Then the
	// reservation is gone and what the handler settled is counted.
	app.completions.Close()
	c.wantMeter("tokens", 18, 0, 100, 150)
	c.wantMeter("requests", 1, 0, proIncluded, proHard)

	// The model is deterministic; max_tokens cuts the reply.
	r2, _ := c.completion("two words", 100)
	var again completionResponse
	if err := json.Unmarshal(r2.Body, &again); err != nil {
		t.Fatal(err)
	}
	if again.Reply == "" || jsonField(t, r.Body, "reply") != again.Reply {
		t.Errorf("the same prompt got %q, then %q", jsonField(t, r.Body, "reply"), again.Reply)
	}
	if r, used := c.completion("two words", 5); used != 7 || jsonField(t, r.Body, "finish_reason") != "length" {
		t.Errorf("max_tokens 5: %s, want 2 + 5 tokens, finish_reason length", r.Body)
	}
	app.completions.Close()
	c.wantMeter("tokens", 18+18+7, 0, 100, 150) // 43

	// 43 used, 107 left: a completion that may use 102 fits once more.
	c.completion("two words", 100)
	app.completions.Close()
	c.wantMeter("tokens", 61, 0, 100, 150)
	// 89 left: 102 no longer fits, refused before the handler runs.
	r = c.complete(`{"prompt":"two words","max_tokens":100}`, http.StatusPaymentRequired, quota.ProblemQuotaExceeded)
	wantTokens402(t, r, 150, 61)
	wantRateLimit(t, r.Header, "tokens", 150, 89)
	// Smaller ones fit, until the cap is used: 89 = 9×(1+8) + (1+7).
	for i := 0; i < 9; i++ {
		if _, used := c.completion("one", 8); used != 9 {
			t.Fatalf("completion %d used %d tokens, want 9", i, used)
		}
		app.completions.Close()
	}
	c.wantMeter("tokens", 142, 0, 100, 150)
	c.completion("one", 7)
	app.completions.Close()
	c.wantMeter("tokens", 150, 0, 100, 150)
	r = c.complete(`{"prompt":"one","max_tokens":1}`, http.StatusPaymentRequired, quota.ProblemQuotaExceeded)
	wantTokens402(t, r, 150, 150)
	wantRateLimit(t, r.Header, "tokens", 150, 0)
	// Only the allowed completions counted as requests: 4 + 9 + 1.
	app.completions.Close()
	c.wantMeter("requests", 14, 0, proIncluded, proHard)
	c.wantMeter("tokens", 150, 0, 100, 150)
}

// wantTokens402 checks a 402 refusing a completion for its tokens: the
// problem names the meter, its limit and usage, and Retry-After is set.
func wantTokens402(t *testing.T, r response, limit, used float64) {
	t.Helper()
	b := r.json(t)
	if b["meter"] != "tokens" || !reflect.DeepEqual(b["violated-policies"], []any{"tokens"}) || b["limit"] != limit || b["used"] != used {
		t.Errorf("402 %s, want meter tokens (policy tokens) with limit %v and used %v", r.Body, limit, used)
	}
	if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra <= 0 {
		t.Errorf("Retry-After %q, want seconds to the period's end", r.Header.Get("Retry-After"))
	}
}

// TestCompleteConcurrent sends concurrent completions of various sizes:
// once the middleware's Close has returned, the token meter counts exactly
// what the responses say they used, with nothing left reserved, and the
// requests meter the completions allowed. (On a loaded machine a decision
// may miss its 100ms deadline: its 503 is refunded, and adds nothing.)
func TestCompleteConcurrent(t *testing.T) {
	t.Parallel()
	app, c := startApp(t, nil)
	c.send(demo.SubscriptionCreated)
	const workers, each = 8, 8
	var (
		mu      sync.Mutex
		sum     int64
		allowed int64
		wg      sync.WaitGroup
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				prompt := strings.Repeat("word ", 1+(w+i)%5)
				body := fmt.Sprintf(`{"prompt":%q,"max_tokens":%d}`, prompt, 1+(w*each+i)%40)
				req, _ := http.NewRequest("POST", c.base+"/v1/complete", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+c.key)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusServiceUnavailable {
					continue
				}
				var got completionResponse
				if err := json.Unmarshal(b, &got); resp.StatusCode != http.StatusOK || err != nil {
					t.Errorf("completion = %d %s", resp.StatusCode, b)
					return
				}
				mu.Lock()
				sum += got.Usage.TotalTokens
				allowed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if allowed < workers*each/2 {
		t.Fatalf("%d of %d completions allowed", allowed, workers*each)
	}
	app.completions.Close()
	c.wantMeter("tokens", sum, 0, proTokensIncluded, proTokensHard)
	c.wantMeter("requests", allowed, 0, proIncluded, proHard)
}

// TestCompleteReserved checks that /billing/usage shows the tokens that a
// running completion holds as reserved, not used, and that its settle
// turns them into what it settled. The handler stands in for a model that
// takes its time.
func TestCompleteReserved(t *testing.T) {
	t.Parallel()
	app, c := startApp(t, nil)
	c.send(demo.SubscriptionCreated)
	entered, release := make(chan struct{}), make(chan struct{})
	slow := app.keys.authenticate(decodeCompletion(app.completions.Handle(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		if err := quota.Settle(r.Context(), tokensMeter, 7); err != nil {
			t.Error(err)
		}
	}))))
	done := make(chan int)
	go func() {
		req := httptest.NewRequest("POST", "/v1/complete", strings.NewReader(`{"prompt":"a b c","max_tokens":50}`))
		req.Header.Set("Authorization", "Bearer "+c.key)
		rec := httptest.NewRecorder()
		slow.ServeHTTP(rec, req)
		done <- rec.Code
	}()
	<-entered
	c.wantMeter("tokens", 0, 53, proTokensIncluded, proTokensHard)
	c.wantMeter("requests", 1, 0, proIncluded, proHard)
	close(release)
	if code := <-done; code != http.StatusOK {
		t.Fatalf("slow completion = %d", code)
	}
	app.completions.Close()
	c.wantMeter("tokens", 7, 0, proTokensIncluded, proTokensHard)
}

// TestCompleteBadInput checks that POST /v1/complete answers a bad body
// with a problem, before it is metered: nothing is counted or reserved.
func TestCompleteBadInput(t *testing.T) {
	t.Parallel()
	app, c := startApp(t, nil)
	c.send(demo.SubscriptionCreated)
	tests := []struct {
		name, body string
		code       int
	}{
		{"not JSON", `prompt=hi`, http.StatusBadRequest},
		{"empty body", ``, http.StatusBadRequest},
		{"an array", `["hi"]`, http.StatusBadRequest},
		{"unknown field", `{"prompt":"hi","max_token":5}`, http.StatusBadRequest},
		{"two objects", `{"prompt":"hi"}{"prompt":"again"}`, http.StatusBadRequest},
		{"no prompt", `{"max_tokens":5}`, http.StatusBadRequest},
		{"blank prompt", `{"prompt":" \n "}`, http.StatusBadRequest},
		{"prompt not a string", `{"prompt":5}`, http.StatusBadRequest},
		{"max_tokens 0", `{"prompt":"hi","max_tokens":0}`, http.StatusBadRequest},
		{"max_tokens too large", `{"prompt":"hi","max_tokens":4097}`, http.StatusBadRequest},
		{"max_tokens not an integer", `{"prompt":"hi","max_tokens":1.5}`, http.StatusBadRequest},
		{"body too large", `{"prompt":"` + strings.Repeat("a ", maxCompleteBody/2) + `"}`, http.StatusRequestEntityTooLarge},
		{"too large after the object", `{"prompt":"hi"}` + strings.Repeat(" ", maxCompleteBody), http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		r := c.authed("POST", "/v1/complete", []byte(tt.body))
		if r.Code != tt.code || r.Header.Get("Content-Type") != "application/problem+json" || r.json(t)["status"] != float64(tt.code) {
			t.Errorf("%s: %d %s %.200s, want a %d problem", tt.name, r.Code, r.Header.Get("Content-Type"), r.Body, tt.code)
		}
	}
	if r := c.do("POST", "/v1/complete", []byte(`{"prompt":"hi"}`), nil); r.Code != http.StatusUnauthorized {
		t.Errorf("without an API key: %d, want 401", r.Code)
	}
	app.completions.Close()
	c.wantMeter("requests", 0, 0, proIncluded, proHard)
	c.wantMeter("tokens", 0, 0, proTokensIncluded, proTokensHard)
}

// TestExportFeature checks the gate of GET /v1/export, pro's feature: 402
// without a plan, 403 naming the feature for a pending subject and for
// starter, 200 for pro; only the 200s count as requests.
func TestExportFeature(t *testing.T) {
	t.Parallel()
	_, c := startApp(t, nil)
	wantFeatureProblem := func(code int, typ string) {
		t.Helper()
		r := c.export(code, typ)
		if b := r.json(t); b["feature"] != exportFeature {
			t.Errorf("%d %s, want the feature %s named", r.Code, r.Body, exportFeature)
		}
	}
	const problemFeature = "https://pkg.go.dev/github.com/billkit/billkit/billing#Lifecycle.RequireFeature"

	wantFeatureProblem(http.StatusPaymentRequired, quota.ProblemNoPlan)
	c.send(demo.CheckoutCompleted)
	wantFeatureProblem(http.StatusForbidden, problemFeature) // the provisional allowance has no features
	c.send(demo.SubscriptionCreated)
	r := c.export(http.StatusOK, "")
	if ct := r.Header.Get("Content-Type"); ct != "text/csv; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	wantCSV := "subject,plan,meter,used,reserved,included,limit,remaining,reset\n" +
		"alice,pro,requests,1,0,10000,50000,49999,2026-12-01T00:00:00Z\n" +
		"alice,pro,tokens,0,0,100000,500000,500000,2026-12-01T00:00:00Z\n"
	if string(r.Body) != wantCSV {
		t.Errorf("export:\n%s\nwant\n%s", r.Body, wantCSV)
	}
	if f := c.usage()["features"]; !reflect.DeepEqual(f, []any{exportFeature}) {
		t.Errorf("pro's features %v, want [export]", f)
	}

	c.toStarter()
	wantFeatureProblem(http.StatusForbidden, problemFeature)
	if f := c.usage()["features"]; !reflect.DeepEqual(f, []any{}) {
		t.Errorf("starter's features %v, want []", f)
	}
	c.send(demo.SubscriptionDeleted)
	wantFeatureProblem(http.StatusPaymentRequired, quota.ProblemNoPlan)
	c.wantUsage("canceled", "", 1) // the one export allowed
}

// TestUsageMeters checks that GET /billing/usage lists every meter of the
// caller's plan: requests only without a plan and for the provisional
// allowance, requests and tokens for pro and starter, each with its own
// included units and limit.
func TestUsageMeters(t *testing.T) {
	t.Parallel()
	app, c := startApp(t, map[string]string{"PLAN_PRO_TOKENS_HARD": "0"}) // pro: overage of tokens without a cap
	names := func() []string {
		var out []string
		for _, m := range c.usage()["meters"].([]any) {
			out = append(out, m.(map[string]any)["meter"].(string))
		}
		return out
	}
	wantNames := func(want ...string) {
		t.Helper()
		if got := names(); !reflect.DeepEqual(got, want) {
			t.Errorf("meters %q, want %q", got, want)
		}
	}
	wantNames("requests")
	c.wantMeter("requests", 0, 0, 0, 0)
	c.send(demo.CheckoutCompleted)
	wantNames("requests")
	c.send(demo.SubscriptionCreated)
	wantNames("requests", "tokens")
	c.completion("a b", 10) // 2 + 10 tokens
	app.completions.Close()
	c.wantMeter("requests", 1, 0, proIncluded, proHard)
	c.toStarter()
	wantNames("requests", "tokens")
	c.wantMeter("tokens", 12, 0, starterTokensIncluded, starterTokensIncluded)
	c.wantMeter("requests", 1, 0, starterIncluded, starterIncluded)
	// The top-level fields are the requests meter's, as before meters.
	if u := c.usage(); u["used"] != 1.0 || u["limit"] != float64(starterIncluded) || u["included"] != float64(starterIncluded) || u["remaining"] != float64(starterIncluded-1) {
		t.Errorf("usage %v, want the requests meter's fields", u)
	}
	c.sub.Tier, c.sub.PriceID, c.sub.MeteredPriceID = "pro", demo.PricePro, demo.PriceProMetered
	c.send(demo.SubscriptionUpdated)
	c.wantMeter("tokens", 12, 0, proTokensIncluded, -1)
}
