package app

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestAuthenticate(t *testing.T) {
	t.Parallel()
	keys := newAPIKeys(map[string]string{
		"alice-key-0123456789": "alice",
		"bob-key-0123456789ab": "bob",
	})
	h := keys.authenticate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(subjectFrom(r.Context())))
	}))
	tests := []struct {
		name, header string
		code         int
		subject      string
	}{
		{"alice", "Bearer alice-key-0123456789", 200, "alice"},
		{"bob", "Bearer bob-key-0123456789ab", 200, "bob"},
		{"scheme is case-insensitive", "bearer alice-key-0123456789", 200, "alice"},
		{"no header", "", 401, ""},
		{"wrong key", "Bearer alice-key-0123456780", 401, ""},
		{"prefix of a key", "Bearer alice-key-012345678", 401, ""},
		{"key with a suffix", "Bearer alice-key-0123456789x", 401, ""},
		{"basic auth", "Basic YWxpY2U6cHc=", 401, ""},
		{"bearer without token", "Bearer ", 401, ""},
		{"bare key", "alice-key-0123456789", 401, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest("GET", "/v1/hello", nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			// A client-chosen subject never counts.
			r.Header.Set("X-Subject", "mallory")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.code {
				t.Fatalf("code %d, want %d", w.Code, tt.code)
			}
			if tt.code == 200 && w.Body.String() != tt.subject {
				t.Errorf("subject %q, want %q", w.Body.String(), tt.subject)
			}
			if tt.code == 401 {
				if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
					t.Errorf("Content-Type %q", ct)
				}
				if !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("WWW-Authenticate %q", w.Header().Get("WWW-Authenticate"))
				}
				if strings.Contains(w.Body.String(), "alice-key") {
					t.Errorf("401 body reveals a key: %s", w.Body.String())
				}
			}
		})
	}
}

func BenchmarkAPIKeyLookup(b *testing.B) {
	keys := map[string]string{}
	for i := 0; i < 100; i++ {
		keys[randomHex(16)] = "s"
	}
	a := newAPIKeys(keys)
	b.ReportAllocs()
	for b.Loop() {
		a.lookup("no-such-key-0123456789")
	}
}
