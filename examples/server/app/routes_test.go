package app

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
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
