package usage

import (
	"context"
	"math"
	"sync"
	"time"
)

// tokenBucket paces Stripe requests: rate tokens per second, up to burst
// banked. Callers reserve a token and wait for the returned delay, so
// concurrent callers queue in order. When Stripe rate-limits, throttle
// halves the rate and pauses every caller; recover regains the rate by a
// tenth of the configured one per success. It is safe for concurrent use.
type tokenBucket struct {
	max   float64 // the configured rate, tokens per second
	burst float64
	now   func() time.Time

	mu       sync.Mutex
	rate     float64 // the current rate, max or less
	tokens   float64
	last     time.Time
	paused   time.Time     // no token is handed out before it
	pause    time.Duration // the last pause, doubled by each throttle in a row
	throttle bool          // the last call was throttled
}

func newTokenBucket(rate float64, burst int, now func() time.Time) *tokenBucket {
	return &tokenBucket{max: rate, rate: rate, burst: float64(burst), tokens: float64(burst), now: now}
}

// minRateShare bounds how far throttling lowers the rate: to this share of
// the configured one.
const minRateShare = 1.0 / 64

// maxPause bounds the pause after repeated 429s.
const maxPause = time.Minute

// throttle halves the rate, empties the bucket and pauses every caller:
// for pause after the first 429 in a row, doubling for each further one
// (up to a minute). It returns the pause.
func (b *tokenBucket) throttleFor(pause time.Duration) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.throttle && b.pause > 0 {
		pause = min(2*b.pause, maxPause)
	}
	b.throttle, b.pause = true, pause
	b.rate = math.Max(b.rate/2, b.max*minRateShare)
	b.tokens = math.Min(b.tokens, 0)
	if until := b.now().Add(pause); until.After(b.paused) {
		b.paused = until
	}
	return pause
}

// recover regains a tenth of the configured rate after a success.
func (b *tokenBucket) recover() {
	b.mu.Lock()
	b.throttle = false
	b.rate = math.Min(b.max, b.rate+b.max/10)
	b.mu.Unlock()
}

// currentRate returns the rate now.
func (b *tokenBucket) currentRate() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.rate
}

// reserve takes one token and returns how long the caller must wait
// before using it. The balance may go negative: that is the queue.
func (b *tokenBucket) reserve() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if !b.last.IsZero() {
		if el := now.Sub(b.last).Seconds(); el > 0 {
			b.tokens = math.Min(b.burst, b.tokens+el*b.rate)
		}
	}
	b.last = now
	b.tokens--
	var d time.Duration
	if b.tokens < 0 {
		d = time.Duration(-b.tokens / b.rate * float64(time.Second))
	}
	if p := b.paused.Sub(now); p > d {
		d = p
	}
	return d
}

// cancel returns a reserved but unused token.
func (b *tokenBucket) cancel() {
	b.mu.Lock()
	b.tokens = math.Min(b.burst, b.tokens+1)
	b.mu.Unlock()
}

// wait blocks until a token is available or ctx ends.
func (b *tokenBucket) wait(ctx context.Context) error {
	d := b.reserve()
	if d <= 0 {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		b.cancel()
		return context.DeadlineExceeded
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		b.cancel()
		return ctx.Err()
	}
}
