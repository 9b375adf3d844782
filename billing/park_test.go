package billing_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/billkit/billkit/billing"
)

// TestParkingStoreConformance runs the ParkingStore contract against every
// store of storeFactories: memory, miniredis, a real redis-server and a
// real Redis Cluster.
func TestParkingStoreConformance(t *testing.T) {
	t.Parallel()
	for name, open := range storeFactories() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			ps, ok := billing.AsParking(s)
			if !ok {
				t.Fatalf("%T does not implement billing.ParkingStore", s)
			}
			testParkingStore(t, ps)
		})
	}
}

// requireParked fails t unless s holds exactly want for customer.
func requireParked(t testing.TB, s billing.ParkingStore, customer string, want map[string]string) {
	t.Helper()
	got, err := s.Parked(context.Background(), customer)
	if err != nil {
		t.Fatalf("Parked(%s): %v", customer, err)
	}
	if got == nil {
		t.Fatalf("Parked(%s) = nil map, want an empty map at least", customer)
	}
	if len(got) != len(want) {
		t.Fatalf("Parked(%s) = %v, want %v", customer, parkedIDs(got), want)
	}
	for id, data := range want {
		if string(got[id]) != data {
			t.Fatalf("Parked(%s)[%s] = %q, want %q", customer, id, got[id], data)
		}
	}
}

func testParkingStore(t *testing.T, s billing.ParkingStore) {
	ctx := context.Background()
	const ttl = time.Hour
	park := func(customer, id, data string) {
		t.Helper()
		if err := s.Park(ctx, customer, id, []byte(data), ttl); err != nil {
			t.Fatalf("Park(%s, %s): %v", customer, id, err)
		}
	}

	t.Run("round trip", func(t *testing.T) {
		requireParked(t, s, "cus_nobody", map[string]string{})
		data := []byte(`{"event_id":"evt_1"}`)
		if err := s.Park(ctx, "cus_rt", "evt_1", data, ttl); err != nil {
			t.Fatal(err)
		}
		data[2] = 'X' // the caller's slice is not kept
		park("cus_rt", "evt_2", "two")
		requireParked(t, s, "cus_rt", map[string]string{"evt_1": `{"event_id":"evt_1"}`, "evt_2": "two"})
		got, _ := s.Parked(ctx, "cus_rt")
		got["evt_1"][0] = 'X' // nor the returned one
		delete(got, "evt_2")
		requireParked(t, s, "cus_rt", map[string]string{"evt_1": `{"event_id":"evt_1"}`, "evt_2": "two"})
		requireParked(t, s, "cus_other", map[string]string{})
	})

	t.Run("same event ID replaces", func(t *testing.T) {
		park("cus_rep", "evt_1", "first")
		park("cus_rep", "evt_2", "other")
		park("cus_rep", "evt_1", "second")
		requireParked(t, s, "cus_rep", map[string]string{"evt_1": "second", "evt_2": "other"})
	})

	t.Run("unpark removes only the named events", func(t *testing.T) {
		park("cus_un", "evt_a", "a")
		park("cus_un", "evt_b", "b")
		park("cus_un", "evt_c", "c")
		park("cus_un2", "evt_a", "a of another customer")
		if err := s.Unpark(ctx, "cus_un", "evt_a", "evt_unknown"); err != nil {
			t.Fatalf("Unpark: %v", err)
		}
		requireParked(t, s, "cus_un", map[string]string{"evt_b": "b", "evt_c": "c"})
		requireParked(t, s, "cus_un2", map[string]string{"evt_a": "a of another customer"})
		if err := s.Unpark(ctx, "cus_un"); err != nil {
			t.Fatalf("Unpark of no events: %v", err)
		}
		if err := s.Unpark(ctx, "cus_never", "evt_x"); err != nil {
			t.Fatalf("Unpark of an unknown customer: %v", err)
		}
		requireParked(t, s, "cus_un", map[string]string{"evt_b": "b", "evt_c": "c"})
		if err := s.Unpark(ctx, "cus_un", "evt_b", "evt_c"); err != nil {
			t.Fatal(err)
		}
		requireParked(t, s, "cus_un", map[string]string{})
		park("cus_un", "evt_d", "d") // a customer emptied can park again
		requireParked(t, s, "cus_un", map[string]string{"evt_d": "d"})
	})

	t.Run("bound", func(t *testing.T) {
		// The default bound of both stores is 100 events per customer.
		for i := 0; i < 100; i++ {
			park("cus_full", fmt.Sprintf("evt_%03d", i), "x")
		}
		if err := s.Park(ctx, "cus_full", "evt_100", []byte("x"), ttl); !errors.Is(err, billing.ErrParkFull) {
			t.Fatalf("Park of event 101 error = %v, want ErrParkFull", err)
		}
		park("cus_full", "evt_007", "replaced") // replacing is not one more
		if err := s.Unpark(ctx, "cus_full", "evt_000"); err != nil {
			t.Fatal(err)
		}
		park("cus_full", "evt_100", "x") // room again
		got, err := s.Parked(ctx, "cus_full")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 100 || string(got["evt_007"]) != "replaced" || got["evt_000"] != nil {
			t.Fatalf("Parked(cus_full) holds %d events, evt_007 = %q, evt_000 present = %v", len(got), got["evt_007"], got["evt_000"] != nil)
		}
		park("cus_notfull", "evt_1", "x") // the bound is per customer
		if err := s.Unpark(ctx, "cus_full", parkedIDs(got)...); err != nil {
			t.Fatal(err)
		}
		requireParked(t, s, "cus_full", map[string]string{})
	})

	t.Run("for each parked", func(t *testing.T) {
		// Enough customers to land on every master of the cluster.
		for i := 0; i < 60; i++ {
			park(fmt.Sprintf("cus_fe_%02d", i), "evt_1", "x")
			park(fmt.Sprintf("cus_fe_%02d", i), "evt_2", "y")
		}
		park("cus_gone", "evt_1", "x")
		if err := s.Unpark(ctx, "cus_gone", "evt_1"); err != nil {
			t.Fatal(err)
		}
		seen := map[string]int{}
		err := s.ForEachParked(ctx, func(customer string) error {
			seen[customer]++
			// fn may call the store.
			if _, err := s.Parked(ctx, customer); err != nil {
				return err
			}
			return nil
		})
		if err != nil {
			t.Fatalf("ForEachParked: %v", err)
		}
		want := map[string]bool{"cus_rt": true, "cus_rep": true, "cus_un": true, "cus_un2": true, "cus_notfull": true}
		for i := 0; i < 60; i++ {
			want[fmt.Sprintf("cus_fe_%02d", i)] = true
		}
		for c := range want {
			if seen[c] != 1 {
				t.Errorf("ForEachParked listed %s %d times, want once", c, seen[c])
			}
		}
		for c, n := range seen {
			if !want[c] {
				t.Errorf("ForEachParked listed %s (%d times), which has no parked events", c, n)
			}
		}

		stop := errors.New("stop")
		calls := 0
		err = s.ForEachParked(ctx, func(string) error { calls++; return stop })
		if !errors.Is(err, stop) || calls != 1 {
			t.Fatalf("ForEachParked with a failing fn: err %v after %d calls, want stop after 1", err, calls)
		}
	})

	t.Run("concurrent parks all land", func(t *testing.T) {
		const n = 50
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- s.Park(ctx, "cus_conc", fmt.Sprintf("evt_%02d", i), []byte(fmt.Sprintf("data %d", i)), ttl)
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("concurrent Park: %v", err)
			}
		}
		want := map[string]string{}
		for i := 0; i < n; i++ {
			want[fmt.Sprintf("evt_%02d", i)] = fmt.Sprintf("data %d", i)
		}
		requireParked(t, s, "cus_conc", want)
	})
}

// TestRedisParkTTL: every park key of the Redis store expires, and a later
// Park extends its expiry but never shortens it.
func TestRedisParkTTL(t *testing.T) {
	t.Parallel()
	for name, open := range map[string]func(t *testing.T) redis.UniversalClient{
		"miniredis": func(t *testing.T) redis.UniversalClient { return miniRedis(t) },
		"redis":     func(t *testing.T) redis.UniversalClient { return realRedis(t) },
		"cluster":   func(t *testing.T) redis.UniversalClient { return realCluster(t) },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			rdb := open(t)
			s, _ := billing.AsParking(newRedisStore(t, rdb))
			key := func(customer string) string { return billing.DefaultPrefix + ":park:{" + customer + "}" }
			pttl := func(customer string) time.Duration {
				t.Helper()
				d, err := rdb.PTTL(ctx, key(customer)).Result()
				if err != nil {
					t.Fatalf("PTTL %s: %v", key(customer), err)
				}
				return d
			}
			park := func(customer, id string, ttl time.Duration) {
				t.Helper()
				if err := s.Park(ctx, customer, id, []byte("x"), ttl); err != nil {
					t.Fatalf("Park(%s, %s, %v): %v", customer, id, ttl, err)
				}
			}
			about := func(step string, got, want time.Duration) {
				t.Helper()
				if got <= want-time.Minute || got > want {
					t.Fatalf("%s: PTTL = %v, want about %v", step, got, want)
				}
			}

			park("cus_ttl", "evt_1", 2*time.Hour)
			if n, err := rdb.Exists(ctx, key("cus_ttl")).Result(); err != nil || n != 1 {
				t.Fatalf("key %s exists = %d, %v; want the documented park key", key("cus_ttl"), n, err)
			}
			about("first park", pttl("cus_ttl"), 2*time.Hour)
			park("cus_ttl", "evt_2", time.Hour)
			about("a shorter ttl", pttl("cus_ttl"), 2*time.Hour)
			park("cus_ttl", "evt_1", time.Minute)
			about("a shorter ttl replacing an event", pttl("cus_ttl"), 2*time.Hour)
			park("cus_ttl", "evt_3", 3*time.Hour)
			about("a longer ttl", pttl("cus_ttl"), 3*time.Hour)
			if err := s.Unpark(ctx, "cus_ttl", "evt_1"); err != nil {
				t.Fatal(err)
			}
			about("after an unpark", pttl("cus_ttl"), 3*time.Hour)

			// A key that lost its expiry gets one back at the next Park.
			if err := rdb.Persist(ctx, key("cus_ttl")).Err(); err != nil {
				t.Fatal(err)
			}
			park("cus_ttl", "evt_4", time.Hour)
			about("after PERSIST", pttl("cus_ttl"), time.Hour)

			// Every key of many customers has an expiry.
			for i := 0; i < 30; i++ {
				c := fmt.Sprintf("cus_ttl_%02d", i)
				park(c, "evt_1", time.Hour)
				if d := pttl(c); d <= 0 {
					t.Fatalf("park key of %s has PTTL %v, want an expiry", c, d)
				}
			}
		})
	}
}

// TestMemoryParkExpires: the memory store forgets parked events after their
// ttl on its clock, frees their room in the bound, and lists no customer
// whose events all expired.
func TestMemoryParkExpires(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := newClock(t0)
	s, _ := billing.AsParking(billing.NewMemoryStore(billing.MemoryOptions{Now: clk.Now}))
	park := func(customer, id string, ttl time.Duration) {
		t.Helper()
		if err := s.Park(ctx, customer, id, []byte(id), ttl); err != nil {
			t.Fatalf("Park(%s, %s): %v", customer, id, err)
		}
	}
	listed := func() []string {
		t.Helper()
		var cs []string
		if err := s.ForEachParked(ctx, func(c string) error { cs = append(cs, c); return nil }); err != nil {
			t.Fatal(err)
		}
		return cs
	}
	park("cus_m", "evt_1", time.Hour)
	park("cus_m", "evt_2", 3*time.Hour)
	park("cus_n", "evt_9", time.Hour)

	clk.Add(time.Hour - time.Nanosecond)
	requireParked(t, s, "cus_m", map[string]string{"evt_1": "evt_1", "evt_2": "evt_2"})
	requireParked(t, s, "cus_n", map[string]string{"evt_9": "evt_9"})

	clk.Add(time.Nanosecond)
	requireParked(t, s, "cus_m", map[string]string{"evt_2": "evt_2"})
	requireParked(t, s, "cus_n", map[string]string{})
	if got := listed(); len(got) != 1 || got[0] != "cus_m" {
		t.Fatalf("ForEachParked listed %v after the first expiry, want [cus_m]", got)
	}

	clk.Add(2 * time.Hour)
	requireParked(t, s, "cus_m", map[string]string{})
	if got := listed(); len(got) != 0 {
		t.Fatalf("ForEachParked listed %v after every event expired, want none", got)
	}

	// Expired events free their room in the bound (100 per customer).
	for i := 0; i < 100; i++ {
		park("cus_full", fmt.Sprintf("evt_%03d", i), time.Hour)
	}
	if err := s.Park(ctx, "cus_full", "evt_100", nil, time.Hour); !errors.Is(err, billing.ErrParkFull) {
		t.Fatalf("Park of event 101 error = %v, want ErrParkFull", err)
	}
	clk.Add(time.Hour)
	park("cus_full", "evt_100", time.Hour)
	requireParked(t, s, "cus_full", map[string]string{"evt_100": "evt_100"})
}
