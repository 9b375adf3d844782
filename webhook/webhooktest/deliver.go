package webhooktest

import (
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// Deliverer posts signed events to an [http.Handler] the way Stripe can:
// several copies of each event, concurrently, in a shuffled order. It calls
// the handler's ServeHTTP directly (no network). The zero value with Secret
// set delivers each event once, in order, one at a time.
//
// A Deliverer is safe for concurrent use; Deliver does not modify it.
type Deliverer struct {
	// Secret signs every delivery. Required.
	Secret string
	// Copies is how many times each event is delivered. The default value
	// is 1.
	Copies int
	// Concurrency is how many deliveries run at once. The default value is
	// 1 (one after another).
	Concurrency int
	// Shuffle delivers in a random order drawn from Seed, the same for the
	// same Seed, events and Copies. The default value is false: the events
	// in order, each one's copies together.
	Shuffle bool
	// Seed seeds the shuffle. The default value is 0, a valid seed.
	Seed uint64
	// Now is the time each delivery is signed at; with Concurrency above 1
	// it is called from several goroutines at once. The default value is
	// [time.Now].
	Now func() time.Time
}

// Result is the outcome of one delivery.
type Result struct {
	// Event is the index, in the events passed to Deliver, of the event
	// delivered.
	Event int
	// EventID is the event's id.
	EventID string
	// Status is the HTTP status the handler answered.
	Status int
	// Body is the response body.
	Body string
}

// Results are the outcomes of the deliveries, in the order they were
// scheduled.
type Results []Result

// Statuses returns the status of each delivery.
func (rs Results) Statuses() []int {
	s := make([]int, len(rs))
	for i, r := range rs {
		s[i] = r.Status
	}
	return s
}

// Count returns how many deliveries were answered with status.
func (rs Results) Count(status int) int {
	n := 0
	for _, r := range rs {
		if r.Status == status {
			n++
		}
	}
	return n
}

// ForEvent returns the results of the deliveries of events[i].
func (rs Results) ForEvent(i int) Results {
	var out Results
	for _, r := range rs {
		if r.Event == i {
			out = append(out, r)
		}
	}
	return out
}

// Deliver delivers events (payloads, for example from [NewEvent]) to h and
// returns one result per delivery. It fails t when Secret is empty; t may be
// nil (in an example), and Deliver then panics instead.
func (d Deliverer) Deliver(t testing.TB, h http.Handler, events ...[]byte) Results {
	if t != nil {
		t.Helper()
	}
	if d.Secret == "" {
		if t == nil {
			panic("webhooktest: Deliverer.Secret is empty")
		}
		t.Fatal("webhooktest: Deliverer.Secret is empty")
	}
	copies := max(d.Copies, 1)
	conc := max(d.Concurrency, 1)
	now := d.Now
	if now == nil {
		now = time.Now
	}

	schedule := make([]int, 0, len(events)*copies)
	for i := range events {
		for range copies {
			schedule = append(schedule, i)
		}
	}
	if d.Shuffle {
		rng := rand.New(rand.NewPCG(d.Seed, d.Seed^0x9e3779b97f4a7c15))
		rng.Shuffle(len(schedule), func(i, j int) { schedule[i], schedule[j] = schedule[j], schedule[i] })
	}
	ids := make([]string, len(events))
	for i, e := range events {
		ids[i] = EventID(e)
	}

	results := make(Results, len(schedule))
	deliver := func(k int) {
		i := schedule[k]
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, RequestAt(d.Secret, events[i], now()))
		results[k] = Result{Event: i, EventID: ids[i], Status: rec.Code, Body: rec.Body.String()}
	}
	if conc == 1 {
		for k := range schedule {
			deliver(k)
		}
		return results
	}

	next := make(chan int)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range min(conc, len(schedule)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for k := range next {
				deliver(k)
			}
		}()
	}
	close(start)
	for k := range schedule {
		next <- k
	}
	close(next)
	wg.Wait()
	return results
}

// Deliver delivers each event once, in order, signed with secret, and
// returns the statuses h answered. It is the short form of
// Deliverer{Secret: secret}.Deliver(t, h, events...).
// t may be nil, as for [Deliverer.Deliver].
func Deliver(t testing.TB, h http.Handler, secret string, events ...[]byte) []int {
	if t != nil {
		t.Helper()
	}
	return Deliverer{Secret: secret}.Deliver(t, h, events...).Statuses()
}
