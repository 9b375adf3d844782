package quota_test

import (
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/billkit/billkit/internal/testserver"
	"github.com/billkit/billkit/quota"
)

// TestRedisOutage is Q5: with Redis stopped, decisions are 503 within the
// deadline (or pass when fail-open), no goroutine is left behind, and the
// service recovers by itself when Redis is back.
func TestRedisOutage(t *testing.T) {
	srv := testserver.StartRedis(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, MaxRetries: -1})
	defer c.Close()
	st := newRedisStore(t, c)
	const deadline = 200 * time.Millisecond
	lim := quota.StaticLimits{Plan: "pro", Included: 1000}
	closed := newMiddleware(t, quota.Config{Store: st, Limits: lim, Deadline: deadline}).Handle(okHandler())
	open := newMiddleware(t, quota.Config{Store: st, Limits: lim, Deadline: deadline, FailOpen: true}).Handle(okHandler())

	if w := do(closed, "alice"); w.Code != http.StatusOK {
		t.Fatalf("before the outage: status %d", w.Code)
	}
	before := runtime.NumGoroutine()

	down := time.Now()
	srv.Stop()
	for i := 0; i < 5; i++ {
		start := time.Now()
		w := do(closed, "alice")
		took := time.Since(start)
		if took > deadline+2*time.Second { // generous slack: catches a missing deadline only
			t.Fatalf("decision took %v with a %v deadline", took, deadline)
		}
		if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
			t.Fatalf("Redis down, fail-closed: status %d Retry-After %q, want 503 with Retry-After", w.Code, w.Header().Get("Retry-After"))
		}
		if w := do(open, "alice"); w.Code != http.StatusOK {
			t.Fatalf("Redis down, fail-open: status %d, want 200", w.Code)
		}
	}

	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	recovered := false
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if do(closed, "alice").Code == http.StatusOK {
			recovered = true
			break
		}
	}
	t.Logf("recovered %v after Redis stopped", time.Since(down))
	if !recovered {
		t.Fatal("no 200 within 10s after Redis came back")
	}
	assertGoroutinesSettle(t, before)
}

// TestRedisHung checks the deadline against a server that accepts
// connections and never answers: only the context can end the wait.
func TestRedisHung(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan net.Conn, 16)
	go func() {
		for {
			cn, err := l.Accept()
			if err != nil {
				close(conns)
				return
			}
			conns <- cn // hold it open, never answer
		}
	}()
	t.Cleanup(func() {
		l.Close()
		for cn := range conns {
			cn.Close()
		}
	})
	c := redis.NewClient(&redis.Options{Addr: l.Addr().String(), ContextTimeoutEnabled: true, ReadTimeout: time.Minute, MaxRetries: -1})
	defer c.Close()
	const deadline = 100 * time.Millisecond
	h := newMiddleware(t, quota.Config{Store: newRedisStore(t, c), Limits: quota.StaticLimits{Included: 5}, Deadline: deadline}).Handle(okHandler())
	start := time.Now()
	w := do(h, "alice")
	if took := time.Since(start); took > deadline+5*time.Second {
		t.Fatalf("decision took %v against a hung server (ReadTimeout 1m), deadline %v", took, deadline)
	}
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", w.Code)
	}
}

// assertGoroutinesSettle waits until the goroutine count is back to before.
func assertGoroutinesSettle(t *testing.T, before int) {
	t.Helper()
	var now int
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if now = runtime.NumGoroutine(); now <= before {
			return
		}
	}
	buf := make([]byte, 1<<16)
	t.Fatalf("%d goroutines after the outage, %d before:\n%s", now, before, buf[:runtime.Stack(buf, true)])
}
