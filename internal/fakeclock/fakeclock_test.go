package fakeclock_test

import (
	"sync"
	"testing"
	"time"

	"github.com/billkit/billkit/internal/fakeclock"
)

func TestClock(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	c := fakeclock.New(t0)
	if got := c.Now(); !got.Equal(t0) {
		t.Fatalf("Now = %v, want %v", got, t0)
	}
	c.Add(time.Hour)
	if got, want := c.Now(), t0.Add(time.Hour); !got.Equal(want) {
		t.Fatalf("after Add: %v, want %v", got, want)
	}
	c.AdvanceTo(t0) // earlier: ignored
	if got, want := c.Now(), t0.Add(time.Hour); !got.Equal(want) {
		t.Fatalf("AdvanceTo went backwards: %v, want %v", got, want)
	}
	c.AdvanceTo(t0.Add(2 * time.Hour))
	c.Set(t0)
	if got := c.Now(); !got.Equal(t0) {
		t.Fatalf("after Set: %v, want %v", got, t0)
	}
}

func TestClockConcurrent(t *testing.T) {
	c := fakeclock.New(time.Time{})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				c.Add(time.Second)
				_ = c.Now()
			}
		}()
	}
	wg.Wait()
	if got, want := c.Now(), (time.Time{}).Add(800*time.Second); !got.Equal(want) {
		t.Fatalf("Now = %v, want %v", got, want)
	}
}
