package quota_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/billkit/billkit/internal/fakeclock"
	"github.com/billkit/billkit/quota"
)

// clock is a fake clock, safe for concurrent use.
type clock = fakeclock.Clock

func newClock(t time.Time) *clock { return fakeclock.New(t) }

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// headerSubject reads the subject from the X-Subject header (tests only:
// real subject functions read authentication).
func headerSubject(r *http.Request) (string, error) { return r.Header.Get("X-Subject"), nil }

func okHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
}

func do(h http.Handler, subject string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, "/v1/thing", nil)
	if subject != "" {
		r.Header.Set("X-Subject", subject)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func newMiddleware(t testing.TB, cfg quota.Config) *quota.Middleware {
	t.Helper()
	if cfg.Subject == nil {
		cfg.Subject = headerSubject
	}
	if cfg.Logger == nil {
		cfg.Logger = discardLogger()
	}
	m, err := quota.New(cfg)
	if err != nil {
		t.Fatalf("quota.New: %v", err)
	}
	// No settle or refund outlives its test.
	t.Cleanup(func() { m.Close() })
	return m
}

func miniredisClient(t testing.TB) (*miniredis.Miniredis, *redis.Client) {
	t.Helper()
	mr := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	return mr, c
}

func redisClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	return c
}

func newRedisStore(t testing.TB, c redis.UniversalClient) *quota.RedisStore {
	t.Helper()
	s, err := quota.NewRedisStore(c, quota.RedisOptions{})
	if err != nil {
		t.Fatalf("NewRedisStore: %v", err)
	}
	return s
}

// codeWriter is a minimal, reusable http.ResponseWriter that keeps the
// status code only.
type codeWriter struct {
	h    http.Header
	code int
}

func (w *codeWriter) reset() {
	clear(w.h)
	w.code = 0
}

func (w *codeWriter) Header() http.Header {
	if w.h == nil {
		w.h = http.Header{}
	}
	return w.h
}

func (w *codeWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *codeWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return len(b), nil
}
