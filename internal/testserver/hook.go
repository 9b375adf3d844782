package testserver

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// CommandHook is a go-redis hook that records what a client sends: the
// names of its commands and its round trips (one per command sent alone,
// one per pipeline). Add it with client.AddHook. It is safe for concurrent
// use; its zero value is ready.
type CommandHook struct {
	trips atomic.Int64
	mu    sync.Mutex
	cmds  []string
}

var _ redis.Hook = (*CommandHook)(nil)

// RoundTrips returns the round trips seen so far.
func (h *CommandHook) RoundTrips() int64 { return h.trips.Load() }

// Reset returns the command names recorded since the last Reset, in order,
// and forgets them.
func (h *CommandHook) Reset() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.cmds
	h.cmds = nil
	return out
}

// DialHook implements [redis.Hook].
func (h *CommandHook) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook implements [redis.Hook].
func (h *CommandHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.trips.Add(1)
		h.mu.Lock()
		h.cmds = append(h.cmds, cmd.Name())
		h.mu.Unlock()
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook implements [redis.Hook].
func (h *CommandHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.trips.Add(1)
		h.mu.Lock()
		for _, c := range cmds {
			h.cmds = append(h.cmds, c.Name())
		}
		h.mu.Unlock()
		return next(ctx, cmds)
	}
}
