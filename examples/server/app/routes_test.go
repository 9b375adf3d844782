package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestRoutingErrorsAreProblems checks that unknown paths and wrong methods
// are answered with application/problem+json, like every other error, and
// that a wrong method names the allowed ones.
func TestRoutingErrorsAreProblems(t *testing.T) {
	t.Parallel()
	cfg, err := ConfigFromEnv(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	app, err := NewApp(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	tests := []struct {
		method, path string
		code         int
		allow        string
	}{
		{"GET", "/nope", http.StatusNotFound, ""},
		{"GET", "/v1/nope", http.StatusNotFound, ""},
		{"POST", "/v1/hello", http.StatusMethodNotAllowed, "GET, HEAD"},
		{"GET", "/v1/complete", http.StatusMethodNotAllowed, "POST"},
		{"POST", "/v1/export", http.StatusMethodNotAllowed, "GET, HEAD"},
		{"GET", "/v1/export", http.StatusUnauthorized, ""}, // authenticated first
		{"DELETE", "/billing/usage", http.StatusMethodNotAllowed, "GET, HEAD"},
		{"POST", "/healthz", http.StatusMethodNotAllowed, "GET, HEAD"},
		{"PUT", "/billing/success", http.StatusMethodNotAllowed, "GET, HEAD"},
		{"GET", "/billing/webhook", http.StatusMethodNotAllowed, "POST"},
		{"GET", "/billing/checkout", http.StatusUnauthorized, ""}, // authenticated first
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			t.Parallel()
			rec := httptest.NewRecorder()
			app.Handler().ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
			if rec.Code != tt.code {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tt.code, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type %q, want application/problem+json", ct)
			}
			var p problem
			if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Status != tt.code || p.Type == "" || p.Title == "" {
				t.Errorf("body %q is not a problem with status %d (%v)", rec.Body, tt.code, err)
			}
			if got := rec.Header().Get("Allow"); got != tt.allow {
				t.Errorf("Allow %q, want %q", got, tt.allow)
			}
		})
	}
	// The routes themselves still answer.
	rec := httptest.NewRecorder()
	app.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("GET /healthz = %d", rec.Code)
	}
}

// TestExtraRoutes checks that Config.Routes are served next to the
// server's own routes, without an API key.
func TestExtraRoutes(t *testing.T) {
	t.Parallel()
	cfg, err := ConfigFromEnv(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Routes = map[string]http.Handler{
		"GET /metrics": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "requests_total 1\n")
		}),
		"/debug/": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "debug "+r.URL.Path)
		}),
	}
	app, err := NewApp(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	tests := []struct {
		method, path string
		code         int
		body         string
	}{
		{"GET", "/metrics", http.StatusOK, "requests_total 1\n"},
		{"GET", "/debug/vars", http.StatusOK, "debug /debug/vars"},
		{"GET", "/healthz", http.StatusOK, ""},            // the server's own
		{"GET", "/v1/hello", http.StatusUnauthorized, ""}, // still authenticated
		{"GET", "/nope", http.StatusNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			t.Parallel()
			rec := httptest.NewRecorder()
			app.Handler().ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
			if rec.Code != tt.code {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tt.code, rec.Body)
			}
			if got := rec.Body.String(); tt.body != "" && got != tt.body {
				t.Errorf("body %q, want %q", got, tt.body)
			}
		})
	}
}

// TestExtraRouteErrors checks that an extra route that collides with one
// of the server's own, or that the mux refuses, makes NewApp return an
// error naming it instead of panicking.
func TestExtraRouteErrors(t *testing.T) {
	t.Parallel()
	ok := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	tests := []struct {
		pattern string
		handler http.Handler
		want    string // in the error
	}{
		{"/healthz", ok, "conflicts"},
		{"GET /healthz", ok, "conflicts"},
		{"/billing/webhook", ok, "conflicts"},
		{"POST /v1/complete", ok, "conflicts"},
		{"/", ok, "conflicts"},
		{"GET", ok, "GET"}, // not a pattern
		{"/metrics", nil, "nil handler"},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			t.Parallel()
			cfg, err := ConfigFromEnv(env(nil))
			if err != nil {
				t.Fatal(err)
			}
			cfg.Routes = map[string]http.Handler{"GET /metrics": ok, tt.pattern: tt.handler}
			app, err := NewApp(context.Background(), cfg, slog.New(slog.DiscardHandler))
			if err == nil {
				app.Close()
				t.Fatalf("NewApp with the route %q = nil error, want one", tt.pattern)
			}
			if msg := err.Error(); !strings.Contains(msg, fmt.Sprintf("Config.Routes[%q]", tt.pattern)) || !strings.Contains(msg, tt.want) {
				t.Errorf("error %q, want one naming Config.Routes[%q] and %q", msg, tt.pattern, tt.want)
			}
		})
	}
}
