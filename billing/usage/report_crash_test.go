package usage

import (
	"context"
	"errors"
	"fmt"
	"github.com/billkit/billkit/billing"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/billkit/billkit/billing/internal/fakestripe"
	"github.com/billkit/billkit/quota"
)

var errCrash = errors.New("injected crash")

// lockedRand is a seeded source shared by the reporter's hook and the fake
// Stripe's handler goroutines.
type lockedRand struct {
	mu sync.Mutex
	r  *rand.Rand
}

func (l *lockedRand) chance(p float64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Float64() < p
}

func (l *lockedRand) intN(n int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.IntN(n)
}

// TestReporterCrashes injects crashes between every step of a report (the
// process dies: its lease is not released, a new reporter starts on the
// same stores) and Stripe faults before and after applying a request
// (including a response lost after Stripe applied it), over 200 seeded
// runs per reporter, through a renewal with late units in the closed
// period. Afterwards Stripe holds exactly the counted units of every
// subject: none lost, none billed twice (B3).
func TestReporterCrashes(t *testing.T) {
	t.Parallel()
	variants := []struct {
		name    string
		mode    reportMode
		idemKey bool // fake Stripe honours Idempotency-Key replay
		runs    int
	}{
		{"usage-records", reportTotals, true, 200},
		{"meter-events", reportDeltas, true, 200},
		// Without key replay (keys expire after 24 hours), a resend meets
		// Stripe's duplicate-identifier refusal instead.
		{"meter-events-duplicate-answer", reportDeltas, false, 60},
		// billing.Plans that bill overage only (Plan.OverageOnly): 8 units of each
		// period are not reported.
		{"usage-records-overage", reportTotals, true, 60},
		{"meter-events-overage", reportDeltas, true, 60},
		// Two meters of one subject (requests, and tokens billing the
		// units above 20 of each period) under one lease: each to its own
		// subscription item or meter event name, each exactly.
		{"usage-records-two-meters", reportTotals, true, 100},
		{"meter-events-two-meters", reportDeltas, true, 100},
	}
	for _, v := range variants {
		runs := v.runs
		if testing.Short() {
			runs /= 5
		}
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			fake := fakestripe.NewServer()
			defer fake.Close()
			fake.IdempotencyKeys = v.idemKey
			var crashes, faults atomic.Int64
			var included int64
			if strings.HasSuffix(v.name, "-overage") {
				included = 8
			}
			twoMeters := strings.HasSuffix(v.name, "-two-meters")
			for seed := 0; seed < runs; seed++ {
				crashRun(t, fake, v.mode, included, twoMeters, uint64(seed), &crashes, &faults)
				if t.Failed() {
					t.Fatalf("seed %d failed", seed)
				}
			}
			if crashes.Load() < int64(runs) || faults.Load() < int64(runs) {
				t.Fatalf("too few injected crashes (%d) or Stripe faults (%d) for %d runs", crashes.Load(), faults.Load(), runs)
			}
			t.Logf("%d runs, %d crashes, %d Stripe faults", runs, crashes.Load(), faults.Load())
		})
	}
}

// tokensMeter is the second meter of the two-meter crash runs: its own
// quota counter, meter event name and subscription item, 20 units of each
// period included.
const (
	tokensMeter    = "tokens"
	tokensEvent    = "api_tokens"
	tokensIncluded = 20
)

func tokensItem(e billing.Entitlement) string { return e.MeteredItemID + "_tokens" }

// twoMeterFunc reports requests and tokens.
func twoMeterFunc(e billing.Entitlement) []meterSpec {
	return []meterSpec{
		{Name: testMeter, EventName: "api_requests", PriceID: "price_requests", ItemID: e.MeteredItemID},
		{Name: tokensMeter, EventName: tokensEvent, PriceID: "price_tokens", ItemID: tokensItem(e), Included: tokensIncluded},
	}
}

func crashRun(t *testing.T, fake *fakestripe.Server, mode reportMode, included int64, twoMeters bool, seed uint64, crashes, faults *atomic.Int64) {
	ctx := context.Background()
	rng := &lockedRand{r: rand.New(rand.NewPCG(seed, 0x5eed))}
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	p1 := quota.Period{Start: t0, End: t0.AddDate(0, 1, 0)}
	p2 := quota.Period{Start: p1.End, End: p1.End.AddDate(0, 1, 0)}
	clock := newTestClock(t0.Add(24 * time.Hour))

	counters := quota.NewMemoryStore(quota.MemoryOptions{Now: clock.Now})
	wms := newMemoryWatermarks(clock.Now)
	var crashed atomic.Bool
	leases := crashLeases{newMemoryLeases(clock.Now), &crashed}
	var subjects []string
	var es []billing.Entitlement
	for i := 0; i < 3; i++ {
		s := fmt.Sprintf("%s-i%d-m%v-r%d-s%d", mode, included, twoMeters, seed, i)
		subjects = append(subjects, s)
		es = append(es, billing.Entitlement{Subject: s, Tier: "pro", Status: billing.StatusActive,
			CustomerID: "cus_" + s, MeteredItemID: "si_" + s, Period: p1})
	}
	ents := newReportEnts(es...)

	faultRate := 0.05 + rng.r.Float64()*0.25
	fake.SetFault(func(fakestripe.Request) fakestripe.Fault {
		if !rng.chance(faultRate) {
			return fakestripe.None
		}
		faults.Add(1)
		return fakestripe.Fault(1 + rng.intN(3))
	})
	defer fake.SetFault(nil)

	snk := newSink(t, mode, fake.URL)
	// A crash is the process dying right after a step of a report: after
	// reading the counters, writing the in-flight record, Stripe's answer,
	// or writing the watermark. Each step's store is wrapped so that it
	// completes and then, by chance, the process dies.
	crash := func() error {
		if rng.chance(faultRate / 2) {
			crashes.Add(1)
			crashed.Store(true)
			return errCrash
		}
		return nil
	}
	meters := includedMeterFunc(included)
	if twoMeters {
		meters = twoMeterFunc
	}
	newReporter := func(faulty bool) *Reporter {
		cfg := Config{
			Entitlements: ents, Counters: counters, watermarks: wms, leases: leases,
			meter: meters, Concurrency: 2, Rate: 1e6, Burst: 1000, FlushWait: time.Millisecond,
			BackoffMin: time.Second, BackoffMax: 10 * time.Second,
			Logger: quietLogger(), Now: clock.Now,
		}
		s := snk
		if faulty {
			cfg.Counters = crashCounters{counters, crash}
			cfg.watermarks = crashWatermarks{wms, crash}
			s = crashSink{snk, crash}
		}
		r, err := NewReporter(withSink(cfg, s))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := newReporter(true)
	pass := func() {
		if rng.chance(0.3) {
			_ = r.Flush(ctx, subjects[rng.intN(len(subjects))])
		} else if err := r.ReportAll(ctx); err != nil {
			t.Fatal(err)
		}
		if crashed.Load() {
			// The process died: its leases expire, a new one starts.
			clock.Add(2*time.Minute + time.Second)
			crashed.Store(false)
			r = newReporter(true)
		}
	}
	round := func(p quota.Period) {
		// Quota counts a request into the period it started in: a closed
		// period's last units land within moments of its end, well before
		// it settles (Config.Settle, 5 minutes).
		if clock.Now().Before(p.End.Add(4 * time.Minute)) {
			for _, s := range subjects {
				take(t, counters, s, p, int64(rng.intN(6)))
				if twoMeters {
					takeMeter(t, counters, s, tokensMeter, p, int64(rng.intN(30)))
				}
			}
		}
		clock.Add(time.Duration(1+rng.intN(20)) * time.Second)
		pass()
	}

	for i := 0; i < 3; i++ {
		round(p1)
	}
	// Renewal: p1 closes, its late units still arrive for a moment.
	clock.AdvanceTo(p1.End.Add(time.Minute))
	for _, s := range subjects {
		ents.renew(s, p2)
	}
	for i := 0; i < 2; i++ {
		round(p1)
		round(p2)
	}
	clock.AdvanceTo(p1.End.Add(10 * time.Minute)) // p1 settled
	for i := 0; i < 2; i++ {
		round(p2)
	}

	// Faults stop; passes go on until everything is reported.
	fake.SetFault(nil)
	r = newReporter(false)
	for i := 0; i < 2; i++ {
		clock.Add(time.Minute)
		if err := r.ReportAll(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if st := r.Stats(); st.Pending != 0 || st.Failed != 0 {
		t.Fatalf("seed %d: after clean passes: %+v", seed, st)
	}
	for _, e := range es {
		var want int64
		for _, p := range []quota.Period{p1, p2} {
			u, err := counters.Usage(ctx, e.Subject, testMeter, p)
			if err != nil {
				t.Fatal(err)
			}
			want += max(0, u.Used-included)
		}
		if got := held(fake, mode, e); got != want {
			t.Errorf("seed %d subject %s: Stripe holds %d units, counted %d", seed, e.Subject, got, want)
		}
		if !twoMeters {
			continue
		}
		var wantTokens int64
		for _, p := range []quota.Period{p1, p2} {
			u, err := counters.Usage(ctx, e.Subject, tokensMeter, p)
			if err != nil {
				t.Fatal(err)
			}
			wantTokens += max(0, u.Used-tokensIncluded)
		}
		got := fake.MeterTotal(e.CustomerID, tokensEvent)
		if mode == reportTotals {
			got = fake.UsageTotal(tokensItem(e))
		}
		if got != wantTokens {
			t.Errorf("seed %d subject %s: Stripe holds %d tokens, counted %d above the included", seed, e.Subject, got, wantTokens)
		}
	}
	if mode == reportTotals {
		// One record per period, at the period's start.
		for _, e := range es {
			for _, item := range []string{e.MeteredItemID, tokensItem(e)} {
				for _, ts := range fake.UsageTimestamps(item) {
					if ts != p1.Start.Unix() && ts != p2.Start.Unix() {
						t.Errorf("usage record at %d, not at a period start", ts)
					}
				}
			}
		}
	}
}

// crashCounters dies (by chance) right after reading a counter.
type crashCounters struct {
	Counters
	crash func() error
}

func (c crashCounters) Usage(ctx context.Context, subject, meter string, p quota.Period) (quota.Usage, error) {
	u, err := c.Counters.Usage(ctx, subject, meter, p)
	if err == nil {
		err = c.crash()
	}
	return u, err
}

// crashWatermarks dies (by chance) right after writing an in-flight
// record or a watermark.
type crashWatermarks struct {
	watermarkStore
	crash func() error
}

func (c crashWatermarks) Begin(ctx context.Context, k wmKey, f inFlight, expireAt time.Time) (bool, error) {
	ok, err := c.watermarkStore.Begin(ctx, k, f, expireAt)
	if err == nil && ok {
		err = c.crash()
	}
	return ok, err
}

func (c crashWatermarks) Commit(ctx context.Context, k wmKey, cm wmCommit, expireAt time.Time) (bool, error) {
	ok, err := c.watermarkStore.Commit(ctx, k, cm, expireAt)
	if err == nil && ok {
		err = c.crash()
	}
	return ok, err
}

// crashSink dies (by chance) right after Stripe acknowledged a report.
type crashSink struct {
	sink
	crash func() error
}

func (c crashSink) Report(ctx context.Context, r usageReport) error {
	err := c.sink.Report(ctx, r)
	if err == nil {
		err = c.crash()
	}
	return err
}
