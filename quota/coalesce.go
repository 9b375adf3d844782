package quota

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultMaxBatch bounds the number of decisions a [RedisStore] sends in
// one pipeline when [RedisOptions.MaxBatch] is zero.
const DefaultMaxBatch = 128

// batcher coalesces the take scripts of decisions in flight at the same
// time (natural batching, no timer). When it is idle, a decision is sent
// at once, alone, by its own goroutine, with its own context: a lone
// request waits for nothing. While a send is on the wire, arriving
// decisions queue; when the send returns, the queue (at most max of it)
// goes as one pipeline, and so on until the queue is empty. One send is
// in flight at a time.
//
// On a Cluster the pipeline goes through the ClusterClient, which splits it
// by the node owning each command's slot and sends the parts to their
// nodes concurrently: each node sees one pipeline per batch.
type batcher struct {
	client redis.UniversalClient
	max    int

	mu    sync.Mutex
	busy  bool       // a send is in flight
	queue []*pending // waiting for the next send
}

// pending is a queued decision.
type pending struct {
	ctx  context.Context
	sc   script
	args []any
	// taken is set (under batcher.mu) when the decision leaves the queue
	// for a send; before that, a decision whose context ends leaves the
	// queue by itself and is never sent.
	taken bool
	done  chan struct{}
	val   any
	err   error
}

// run sends one script call (whose first key is args[3]) coalesced with
// the others in flight, and returns its reply.
func (b *batcher) run(ctx context.Context, sc script, args []any, runOne func(context.Context, script, []any) (any, error)) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	if !b.busy {
		// Idle: send at once, alone, with the caller's own context.
		b.busy = true
		b.mu.Unlock()
		v, err := runOne(ctx, sc, args)
		b.next()
		return v, err
	}
	p := &pending{ctx: ctx, sc: sc, args: args, done: make(chan struct{})}
	b.queue = append(b.queue, p)
	b.mu.Unlock()
	select {
	case <-p.done:
		return p.val, p.err
	case <-ctx.Done():
	}
	b.mu.Lock()
	if !p.taken {
		// Never sent: nothing counted.
		for i, q := range b.queue {
			if q == p {
				b.queue = append(b.queue[:i], b.queue[i+1:]...)
				break
			}
		}
		b.mu.Unlock()
		return nil, ctx.Err()
	}
	b.mu.Unlock()
	select {
	case <-p.done:
		return p.val, p.err
	default:
	}
	// Sent (or about to be): an ambiguous outcome, which the caller
	// resolves by refunding the take's ID.
	return nil, ctx.Err()
}

// next ends a send: with decisions queued, it starts sending them in the
// background; otherwise the batcher becomes idle.
func (b *batcher) next() {
	if batch := b.cut(); batch != nil {
		go b.loop(batch)
	}
}

// cut takes the next batch off the queue, or marks the batcher idle and
// returns nil when the queue is empty.
func (b *batcher) cut() []*pending {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) == 0 {
		b.busy = false
		return nil
	}
	n := min(len(b.queue), b.max)
	batch := make([]*pending, n)
	copy(batch, b.queue)
	for _, p := range batch {
		p.taken = true
	}
	rest := copy(b.queue, b.queue[n:])
	clear(b.queue[rest:])
	b.queue = b.queue[:rest]
	return batch
}

// loop sends batches until the queue is empty.
func (b *batcher) loop(batch []*pending) {
	for batch != nil {
		b.send(batch)
		batch = b.cut()
	}
}

// send sends one batch as a pipeline. A decision whose context ended
// while it waited is dropped, never sent. The pipeline's context keeps
// the first decision's values and has the latest of their deadlines (none
// if one of them has none); each caller stops waiting at its own.
func (b *batcher) send(batch []*pending) {
	live := batch[:0]
	for _, p := range batch {
		if err := p.ctx.Err(); err != nil {
			p.err = err
			close(p.done)
			continue
		}
		live = append(live, p)
	}
	if len(live) == 0 {
		return
	}
	ctx := context.WithoutCancel(live[0].ctx)
	var latest time.Time
	for _, p := range live {
		dl, ok := p.ctx.Deadline()
		if !ok {
			latest = time.Time{}
			break
		}
		if dl.After(latest) {
			latest = dl
		}
	}
	if !latest.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, latest)
		defer cancel()
	}
	if len(live) == 1 {
		p := live[0]
		p.val, p.err = b.runOneCtx(ctx, p)
		close(p.done)
		return
	}
	cmds := b.pipeline(ctx, live, false)
	var retry []*pending
	for i, p := range live {
		p.val, p.err = cmds[i].Result()
		if p.err != nil && redis.HasErrorPrefix(p.err, "NOSCRIPT") {
			retry = append(retry, p)
			continue
		}
		close(p.done)
	}
	if len(retry) > 0 {
		// The server does not have a script (restart, SCRIPT FLUSH):
		// EVAL loads it, and the decisions it refused run now.
		cmds = b.pipeline(ctx, retry, true)
		for i, p := range retry {
			p.val, p.err = cmds[i].Result()
			close(p.done)
		}
	}
}

// runOneCtx sends a batch of one decision without a pipeline.
func (b *batcher) runOneCtx(ctx context.Context, p *pending) (any, error) {
	cmd := redis.NewCmd(ctx, p.args...)
	cmd.SetFirstKeyPos(3)
	_ = b.client.Process(ctx, cmd)
	v, err := cmd.Result()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		cmd = redis.NewCmd(ctx, evalArgs(p.sc, p.args)...)
		cmd.SetFirstKeyPos(3)
		_ = b.client.Process(ctx, cmd)
		v, err = cmd.Result()
	}
	return v, err
}

// pipeline sends the decisions' calls (EVAL instead of EVALSHA when eval
// is set) in one pipeline and returns their commands.
func (b *batcher) pipeline(ctx context.Context, ps []*pending, eval bool) []*redis.Cmd {
	cmds := make([]*redis.Cmd, len(ps))
	pipe := b.client.Pipeline()
	for i, p := range ps {
		args := p.args
		if eval {
			args = evalArgs(p.sc, args)
		}
		cmds[i] = redis.NewCmd(ctx, args...)
		cmds[i].SetFirstKeyPos(3)
		_ = pipe.Process(ctx, cmds[i])
	}
	_, _ = pipe.Exec(ctx)
	return cmds
}

// evalArgs returns a copy of an EVALSHA call's arguments as an EVAL.
func evalArgs(sc script, args []any) []any {
	eval := make([]any, len(args))
	copy(eval, args)
	eval[0], eval[1] = "eval", sc.src
	return eval
}
