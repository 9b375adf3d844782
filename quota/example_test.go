package quota_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/billkit/billkit/quota"
)

// Example wires the middleware with a Redis store (miniredis here) and a
// fixed clock, and shows the responses of an allowed and a denied request.
func Example() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	defer rdb.Close()

	store, err := quota.NewRedisStore(rdb, quota.RedisOptions{})
	if err != nil {
		panic(err)
	}
	now := func() time.Time { return time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC) }
	mr.SetTime(now()) // miniredis expires keys by this time
	mw, err := quota.New(quota.Config{
		// Real code reads the authenticated account, never a free header.
		Subject: func(r *http.Request) (string, error) { return r.Header.Get("X-Account"), nil },
		Limits:  quota.StaticLimits{Plan: "free", Included: 2},
		Store:   store,
		Now:     now,
	})
	if err != nil {
		panic(err)
	}
	api := mw.Handle(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, _ := quota.FromContext(r.Context())
		fmt.Fprintf(w, "hello %s, %d left", d.Subject, d.Remaining)
	}))

	for i := 0; i < 3; i++ {
		r := httptest.NewRequest("GET", "/v1/hello", nil)
		r.Header.Set("X-Account", "alice")
		w := httptest.NewRecorder()
		api.ServeHTTP(w, r)
		fmt.Printf("%d RateLimit: %s\n", w.Code, w.Header().Get("RateLimit"))
		if w.Code == http.StatusOK {
			fmt.Println(" ", w.Body)
		} else {
			fmt.Println("  Retry-After:", w.Header().Get("Retry-After"))
		}
	}
	// Output:
	// 200 RateLimit: "free";r=1;t=86400
	//   hello alice, 1 left
	// 200 RateLimit: "free";r=0;t=86400
	//   hello alice, 0 left
	// 402 RateLimit: "free";r=0;t=86400
	//   Retry-After: 86400
}

// ExampleRedisStore_Usage reads the counter that the billing usage reporter
// reports: billable units and, apart, the units of denied requests. The
// counter is one Redis hash, which expires DefaultRetention after its
// period's end.
func ExampleRedisStore_Usage() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	defer rdb.Close()
	store, _ := quota.NewRedisStore(rdb, quota.RedisOptions{})

	ctx := context.Background()
	now := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	mr.SetTime(now) // miniredis expires keys by this time
	period := quota.CalendarPeriod(quota.Month, now)
	for i := 0; i < 4; i++ {
		store.Take(ctx, quota.TakeRequest{
			Subject: "alice", Meter: "requests", Period: period,
			Cost: 1, Limit: 3, ExpireAt: period.End.Add(quota.DefaultRetention),
		})
	}
	u, _ := store.Usage(ctx, "alice", "requests", period)
	fmt.Printf("used %d, denied %d\n", u.Used, u.Denied)
	for _, k := range mr.Keys() {
		if !strings.Contains(k, ":batch:") { // the records of the takes, for a minute
			fmt.Println(k, "expires in", mr.TTL(k))
		}
	}
	// Output:
	// used 3, denied 1
	// billkit:{alice}:usage:requests:20261101 expires in 864h0m0s
}

// ExampleFromContext shows a handler reading the decision.
func ExampleFromContext() {
	mw, _ := quota.New(quota.Config{
		Subject: func(*http.Request) (string, error) { return "alice", nil },
		Limits:  quota.StaticLimits{Plan: "pro", Included: 1000, Soft: 800},
		Store:   quota.NewMemoryStore(quota.MemoryOptions{}),
	})
	h := mw.Handle(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d, ok := quota.FromContext(r.Context()); ok {
			fmt.Println(d.Subject, d.Plan, d.Used, d.Limit, d.Remaining)
		}
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	// Output:
	// alice pro 1 1000 999
}

// ExampleConfig_onSoftLimit fires a hook once, when usage reaches the soft
// limit; the request is still allowed.
func ExampleConfig_onSoftLimit() {
	mw, _ := quota.New(quota.Config{
		Subject: func(*http.Request) (string, error) { return "alice", nil },
		Limits:  quota.StaticLimits{Plan: "pro", Included: 10, Soft: 2},
		Store:   quota.NewMemoryStore(quota.MemoryOptions{}),
		OnSoftLimit: func(_ context.Context, d quota.Decision) {
			fmt.Printf("%s reached %d of %d\n", d.Subject, d.Used, d.Included)
		},
	})
	h := mw.Handle(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	for i := 0; i < 4; i++ {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
		fmt.Printf("%d Quota-Soft-Limit: %q\n", w.Code, w.Header().Get("Quota-Soft-Limit"))
	}
	// Output:
	// 200 Quota-Soft-Limit: ""
	// alice reached 2 of 10
	// 200 Quota-Soft-Limit: "2"
	// 200 Quota-Soft-Limit: "2"
	// 200 Quota-Soft-Limit: "2"
}

// ExampleSettle meters an API whose cost is known only after the
// response: each request reserves 100 tokens before the handler runs, and
// the handler settles what it used (60). The fourth request does not fit
// under the plan's 250 tokens and is refused with 402 naming the meter;
// what it would have cost is never billed.
func ExampleSettle() {
	now := func() time.Time { return time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC) }
	store := quota.NewMemoryStore(quota.MemoryOptions{Now: now})
	mw, err := quota.New(quota.Config{
		Subject: func(*http.Request) (string, error) { return "alice", nil },
		Limits: quota.LimitsFunc(func(_ context.Context, _, meter string) (quota.Limits, error) {
			if meter == "tokens" {
				return quota.Limits{Plan: "pro", Included: 250}, nil
			}
			return quota.Limits{Plan: "pro", Included: 1000}, nil
		}),
		Store: store,
		Now:   now,
		Reserve: []quota.Reservation{{
			Meter:    "tokens",
			Estimate: func(*http.Request) (int64, error) { return 100, nil }, // such as the request's max_tokens
		}},
	})
	if err != nil {
		panic(err)
	}
	defer mw.Close()
	api := mw.Handle(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		used := int64(60) // known once the work is done
		if err := quota.Settle(r.Context(), "tokens", used); err != nil {
			panic(err)
		}
		fmt.Fprintln(w, "generated", used, "tokens")
	}))

	for i := 0; i < 4; i++ {
		w := httptest.NewRecorder()
		api.ServeHTTP(w, httptest.NewRequest("POST", "/v1/complete", nil))
		mw.Close() // waits for the settle, sent after the response
		fmt.Println(w.Code, w.Header().Get("RateLimit"))
		if w.Code == http.StatusPaymentRequired {
			var p struct{ Meter string }
			json.Unmarshal(w.Body.Bytes(), &p)
			fmt.Println("  exhausted:", p.Meter)
		}
	}
	u, _ := store.Usage(context.Background(), "alice", "tokens", quota.CalendarPeriod(quota.Month, now()))
	fmt.Printf("tokens: used %d, reserved %d, denied %d\n", u.Used, u.Reserved, u.Denied)
	// Output:
	// 200 "requests";r=999;t=86400, "tokens";r=150;t=86400
	// 200 "requests";r=998;t=86400, "tokens";r=90;t=86400
	// 200 "requests";r=997;t=86400, "tokens";r=30;t=86400
	// 402 "requests";r=997;t=86400, "tokens";r=70;t=86400
	//   exhausted: tokens
	// tokens: used 180, reserved 0, denied 100
}
