package problem_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/billkit/billkit/internal/problem"
)

func TestWrite(t *testing.T) {
	t.Parallel()
	type extended struct {
		problem.Details
		ValidTiers []string `json:"valid_tiers"`
	}
	cases := []struct {
		name       string
		status     int
		body       any
		wantStatus int
		want       map[string]any
	}{
		{"plain", http.StatusBadRequest, problem.New(http.StatusBadRequest, "bad <input> & more"), http.StatusBadRequest,
			map[string]any{"type": "about:blank", "title": "Bad Request", "status": 400.0, "detail": "bad <input> & more"}},
		{"no detail", http.StatusNotFound, problem.New(http.StatusNotFound, ""), http.StatusNotFound,
			map[string]any{"type": "about:blank", "title": "Not Found", "status": 404.0}},
		{"embedded", http.StatusBadRequest, extended{problem.New(http.StatusBadRequest, "unknown tier"), []string{"pro"}}, http.StatusBadRequest,
			map[string]any{"type": "about:blank", "title": "Bad Request", "status": 400.0, "detail": "unknown tier", "valid_tiers": []any{"pro"}}},
		{"unencodable", http.StatusBadRequest, map[string]any{"f": func() {}}, http.StatusInternalServerError,
			map[string]any{"type": "about:blank", "title": "Internal Server Error", "status": 500.0}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			w := httptest.NewRecorder()
			problem.Write(w, c.status, c.body)
			if w.Code != c.wantStatus {
				t.Fatalf("status %d, want %d", w.Code, c.wantStatus)
			}
			for k, want := range map[string]string{
				"Content-Type": problem.ContentType, "Cache-Control": "no-store",
				"X-Content-Type-Options": "nosniff", "Content-Length": strconv.Itoa(w.Body.Len()),
			} {
				if got := w.Header().Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			raw := w.Body.String()
			if c.name == "plain" && !strings.Contains(raw, "bad <input> & more") {
				t.Errorf("body %q escapes HTML", raw)
			}
			var got map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatalf("body %q: %v", raw, err)
			}
			gb, _ := json.Marshal(got)
			wb, _ := json.Marshal(c.want)
			if string(gb) != string(wb) {
				t.Fatalf("body %s, want %s", gb, wb)
			}
		})
	}
}
