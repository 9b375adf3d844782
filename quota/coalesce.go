package quota

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
//
// On one server (lean is set), each send of lean decisions (takes without
// ID and holds) has a record of its own, a hash with one field per
// decision, instead of a key per decision; a lean decision whose outcome
// is lost to its caller (its context ended after it was sent, or the
// connection broke) is resolved through its field by the resolver.
type batcher struct {
	client redis.UniversalClient
	max    int
	lean   bool
	recPfx string // PREFIX:batch:RANDOM: starts every shared record key
	recRnd string // :batch:RANDOM: follows the subject's tag in a record key of one subject
	rttl   int64  // the records' lifetime in milliseconds
	seq    atomic.Uint64
	// tagged is set once the server refused a shared record (CROSSSLOT:
	// a proxy that shards by hash slot): from then on every record is of
	// one subject, in its hash slot.
	tagged atomic.Bool
	log    *slog.Logger
	res    resolver
	groups map[string]int // scratch of wires, used by the one send in flight

	mu    sync.Mutex
	busy  bool       // a send is in flight
	queue []*pending // waiting for the next send
}

// pending is a decision on its way.
type pending struct {
	ctx  context.Context
	sc   script
	args []any
	call call // a lean decision's arguments (args points into it)

	// A lean decision's record key, its field and the record's lifetime
	// (set on the first decision of a send only) point into args: they
	// are set when it is sent. counter and
	// amount are what resolving it needs.
	lean         bool
	rec          *string
	field, first *int64
	counter      string
	amount       int64
	taken        bool // left the queue for a send (under batcher.mu)
	delivered    bool // its reply is its caller's (under batcher.mu)
	abandoned    bool // its caller left after it was sent (under batcher.mu)
	done         chan struct{}
	val          any
	err          error
}

// run sends p's script call (whose first key is args[3]) coalesced with
// the others in flight, and returns its reply.
func (b *batcher) run(p *pending, runOne func(context.Context, script, []any) (any, error)) (any, error) {
	ctx := p.ctx
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	if !b.busy {
		// Idle: send at once, alone, with the caller's own context.
		b.busy = true
		b.mu.Unlock()
		if p.lean {
			*p.rec, *p.field, *p.first = b.tagKey(p.counter), 0, b.rttl // alone
		}
		v, err := runOne(ctx, p.sc, p.args)
		if p.lean && lost(err) {
			b.res.add(p)
		}
		b.next()
		return v, err
	}
	p.done = make(chan struct{})
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
	if p.delivered {
		b.mu.Unlock()
		<-p.done
		return p.val, p.err
	}
	// Sent (or about to be): an ambiguous outcome. A lean decision is
	// resolved by the batcher once its send has returned; any other is
	// refunded by the caller by its take's ID.
	p.abandoned = true
	b.mu.Unlock()
	return nil, ctx.Err()
}

// recKey returns a new record key.
func (b *batcher) recKey() string {
	var buf [64]byte
	return string(strconv.AppendUint(append(buf[:0], b.recPfx...), b.seq.Add(1), 36))
}

// tagKey returns a new record key of one subject, in its hash slot:
// PREFIX:{SUBJECT}:batch:RANDOM:SEQ, from its counter's key
// PREFIX:{SUBJECT}:usage:....
func (b *batcher) tagKey(counter string) string {
	tag := counter[:strings.IndexByte(counter, '}')+1]
	buf := make([]byte, 0, len(tag)+len(b.recRnd)+13)
	buf = append(append(buf, tag...), b.recRnd...)
	return string(strconv.AppendUint(buf, b.seq.Add(1), 36))
}

// lost reports whether err leaves a lean decision's outcome unknown. Only
// the script's own errors are known to have counted nothing: a counter of
// the wrong type (the script stops at its first read) and an increment
// past the int64 range (its record says so). Every other error may hide
// a run: go-redis retries a command or pipeline after a broken connection
// and after some replies of the server (LOADING, READONLY, TRYAGAIN...),
// so the last error may follow an attempt that ran, and a
// BILLKIT_DUPLICATE reply may be a retry finding its own earlier run.
// Resolving a decision that never ran costs one mark that expires with
// the record.
func lost(err error) bool {
	if err == nil {
		return false
	}
	var re redis.Error
	if errors.As(err, &re) && (redis.HasErrorPrefix(err, "WRONGTYPE") || strings.Contains(err.Error(), "overflow")) {
		return false
	}
	return true
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
	b.exec(ctx, b.wires(live, len(live) == 1 || b.tagged.Load()), len(live) == 1)
	if !b.tagged.Load() && len(live) > 1 {
		// A server that refuses a script whose keys span hash slots (a
		// proxy that shards by slot) ran none of it: the decisions go
		// again, each with a record of its own subject, and so do all
		// that follow.
		var again []*pending
		for _, p := range live {
			if p.lean && redis.HasErrorPrefix(p.err, "CROSSSLOT") {
				again = append(again, p)
			}
		}
		if len(again) > 0 {
			b.tagged.Store(true)
			b.log.Warn("quota: Redis refuses scripts whose keys span hash slots; each subject's decisions now get a record in its own slot (set RedisOptions.RecordPerTake to skip this probe)")
			b.exec(ctx, b.wires(again, true), len(again) == 1)
		}
	}
	var resolve []*pending
	b.mu.Lock()
	for _, p := range live {
		if p.abandoned {
			// Its caller left: whatever it counted is undone.
			if p.lean && (p.err == nil || lost(p.err)) {
				resolve = append(resolve, p)
			}
			continue
		}
		p.delivered = true
		if p.lean && lost(p.err) {
			resolve = append(resolve, p)
		}
	}
	b.mu.Unlock()
	b.res.add(resolve...)
	for _, p := range live {
		close(p.done)
	}
}

// exec sends the calls of a send (alone, without a pipeline, when it
// holds one decision) and gives each decision its reply. A call refused
// with NOSCRIPT is sent again with EVAL.
func (b *batcher) exec(ctx context.Context, ws []wire, alone bool) {
	if alone {
		w := &ws[0]
		w.deliver(b.runOneCtx(ctx, w.sc, w.args))
		return
	}
	cmds := b.pipeline(ctx, ws, false)
	var retry []wire
	for i := range ws {
		v, err := cmds[i].Result()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			retry = append(retry, ws[i])
			continue
		}
		ws[i].deliver(v, err)
	}
	if len(retry) == 0 {
		return
	}
	// The server does not have a script (restart, SCRIPT FLUSH): EVAL
	// loads it, and the decisions it refused run now. Each lean call may
	// be the first of its record to run.
	for _, w := range retry {
		if w.p.lean {
			*w.p.first = b.rttl
		}
	}
	cmds = b.pipeline(ctx, retry, true)
	for i := range retry {
		retry[i].deliver(cmds[i].Result())
	}
}

// runOneCtx sends a batch of one command without a pipeline.
func (b *batcher) runOneCtx(ctx context.Context, sc script, args []any) (any, error) {
	cmd := redis.NewCmd(ctx, args...)
	cmd.SetFirstKeyPos(3)
	_ = b.client.Process(ctx, cmd)
	v, err := cmd.Result()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		cmd = redis.NewCmd(ctx, evalArgs(sc, args)...)
		cmd.SetFirstKeyPos(3)
		_ = b.client.Process(ctx, cmd)
		v, err = cmd.Result()
	}
	return v, err
}

// pipeline sends the commands (EVAL instead of EVALSHA when eval is set)
// in one pipeline and returns them.
func (b *batcher) pipeline(ctx context.Context, ws []wire, eval bool) []*redis.Cmd {
	cmds := make([]*redis.Cmd, len(ws))
	pipe := b.client.Pipeline()
	for i := range ws {
		args := ws[i].args
		if eval {
			args = evalArgs(ws[i].sc, args)
		}
		cmds[i] = redis.NewCmd(ctx, args...)
		cmds[i].SetFirstKeyPos(3)
		_ = pipe.Process(ctx, cmds[i])
	}
	_, _ = pipe.Exec(ctx)
	return cmds
}

// wire is one script call of a send: one decision's (p), or (comboScript)
// those of several lean decisions on one counter (p, then more).
type wire struct {
	sc   script
	args []any
	p    *pending
	more []*pending
}

// Argument positions in a lean take's call (see [RedisStore.leanTake]).
const (
	leanRec     = 3
	leanCounter = 4
	leanHolds   = 5
	leanField   = 6 // then amount, limit, expiry
	leanNow     = 10
	leanFirst   = 11
)

// maxCombo bounds the decisions of one comboScript call, whose reply and
// record write unpack two Lua values per decision (Lua's stack holds
// 8,000).
const maxCombo = 128

// wires numbers the lean decisions of a send in its record and turns the
// send into script calls, in the decisions' order: lean decisions on one
// counter go as one comboScript call (at most maxCombo of them), at the
// place of the first of them. The decisions share one record, unless
// tagged is set: then each call has a record of its own, in its subject's
// hash slot (a key for a decision alone, a hash for a combined call).
func (b *batcher) wires(live []*pending, tagged bool) []wire {
	ws := make([]wire, 0, len(live))
	var rec string
	var field int64
	if b.groups == nil {
		b.groups = make(map[string]int)
	}
	clear(b.groups)
	for _, p := range live {
		if !p.lean {
			ws = append(ws, wire{sc: p.sc, args: p.args, p: p})
			continue
		}
		if i, ok := b.groups[p.counter]; ok && len(ws[i].more) < maxCombo-1 {
			w := &ws[i]
			if tagged {
				if w.more == nil {
					*w.p.field = 1 // the record of its counter's calls becomes a hash
				}
				*p.rec, *p.field = *w.p.rec, int64(len(w.more))+2
			} else {
				field++
				*p.rec, *p.field = rec, field
			}
			w.more = append(w.more, p)
			continue
		}
		switch {
		case tagged:
			*p.rec, *p.field = b.tagKey(p.counter), 0 // alone, unless others join it
		default:
			if rec == "" {
				rec = b.recKey()
			}
			field++
			*p.rec, *p.field = rec, field
		}
		b.groups[p.counter] = len(ws)
		ws = append(ws, wire{sc: p.sc, args: p.args, p: p})
	}
	// The first single call of the send, and every combined call, give the
	// record its lifetime: the two scripts may be refused (NOSCRIPT)
	// independently, so each kind needs its own.
	single := false
	for i := range ws {
		w := &ws[i]
		if !w.p.lean {
			continue
		}
		if w.more == nil {
			if !single || tagged {
				single = true
				*w.p.first = b.rttl // a record of its own, in tagged mode
			}
			continue
		}
		p0 := w.p
		*p0.first = b.rttl
		args := make([]any, 0, 12+4*len(w.more))
		args = append(args, "evalsha", comboScript.sha, "3", p0.args[leanRec], p0.args[leanCounter], p0.args[leanHolds],
			p0.args[leanNow], p0.args[leanFirst])
		args = append(args, p0.args[leanField:leanField+4]...)
		for _, p := range w.more {
			args = append(args, p.args[leanField:leanField+4]...)
		}
		w.sc, w.args = comboScript, args
	}
	return ws
}

// deliver gives the reply of w's call to its decisions (without closing
// their done channels).
func (w *wire) deliver(v any, err error) {
	if w.more == nil {
		w.p.val, w.p.err = v, err
		return
	}
	n := 1 + len(w.more)
	vals, ok := v.([]any)
	if err == nil && (!ok || len(vals) != 3*n) {
		err = fmt.Errorf("unexpected reply %T of %d values for %d decisions", v, len(vals), n)
	}
	for i := range n {
		p := w.p
		if i > 0 {
			p = w.more[i-1]
		}
		if err != nil {
			p.val, p.err = nil, err
			continue
		}
		p.val, p.err = comboReply(vals[3*i : 3*i+3])
	}
}

// comboReply turns comboScript's three values of one decision into the
// reply, or error, leanScript would have given it.
func comboReply(v []any) (any, error) {
	kind, _ := v[0].(int64)
	switch kind {
	case 0, 1:
		used, ok1 := v[1].(int64)
		held, ok2 := v[2].(int64)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("unexpected reply values %T, %T", v[1], v[2])
		}
		if held > 0 {
			return []any{kind, used, held}, nil
		}
		if kind == 0 {
			return used, nil
		}
		return -1 - used, nil
	case 2:
		return nil, scriptError(duplicatePrefix + " decision resolved before it ran")
	default:
		msg, _ := v[1].(string)
		return nil, scriptError(msg)
	}
}

// scriptError is an error a script replied for one decision of a
// comboScript call: a [redis.Error], as it would have been alone.
type scriptError string

func (e scriptError) Error() string { return string(e) }

// RedisError marks e as a reply of the server.
func (scriptError) RedisError() {}

// evalArgs returns a copy of an EVALSHA call's arguments as an EVAL.
func evalArgs(sc script, args []any) []any {
	eval := make([]any, len(args))
	copy(eval, args)
	eval[0], eval[1] = "eval", sc.src
	return eval
}

// resolver resolves lost lean decisions in the background, one goroutine
// at a time, each with resolveSource: an allowed or denied decision is
// undone, one that has not run is marked so that it counts nothing when
// it does. A resolution that fails is tried again, with backoff, until
// half the record's lifetime has passed since the decision was lost, or
// at once when the client is closed; then it is logged and dropped (its
// units stay counted if it ran). At most
// maxUnresolved decisions wait; past that the newest are dropped and
// logged (at most once a second).
type resolver struct {
	client  redis.UniversalClient
	rttl    int64 // the records' lifetime in milliseconds
	log     *slog.Logger
	observe func(context.Context, BackgroundObservation) // RedisOptions.Background

	dropped     atomic.Int64 // not queued since the last log
	lastDropLog atomic.Int64 // Unix ns of that log

	mu      sync.Mutex
	running bool
	queue   []lostTake
	active  int // decisions taken by the running goroutine
}

// lostTake is a lean decision to resolve.
type lostTake struct {
	rec, counter string
	field        int64
	amount       int64
	until        time.Time // give up after this
}

const maxUnresolved = 1 << 16

// add queues ps for resolution.
func (r *resolver) add(ps ...*pending) {
	if len(ps) == 0 {
		return
	}
	until := time.Now().Add(time.Duration(r.rttl) * time.Millisecond / 2)
	r.mu.Lock()
	dropped := 0
	for _, p := range ps {
		if len(r.queue) >= maxUnresolved {
			dropped++
			continue
		}
		r.queue = append(r.queue, lostTake{rec: *p.rec, counter: p.counter, field: *p.field, amount: p.amount, until: until})
	}
	start := !r.running
	r.running = true
	r.mu.Unlock()
	if dropped > 0 {
		r.dropped.Add(int64(dropped))
		if now := time.Now().UnixNano(); now-r.lastDropLog.Load() >= int64(time.Second) {
			r.lastDropLog.Store(now)
			r.log.Error("quota: too many lost decisions waiting to be resolved; those that reached Redis stay counted",
				slog.Int64("decisions", r.dropped.Swap(0)))
		}
	}
	if start {
		go r.loop()
	}
}

// pending returns the number of decisions waiting or being resolved.
func (r *resolver) pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queue) + r.active
}

// loop resolves the queue until it is empty.
func (r *resolver) loop() {
	backoff := 50 * time.Millisecond
	for {
		r.mu.Lock()
		if len(r.queue) == 0 {
			r.running, r.active = false, 0
			r.mu.Unlock()
			return
		}
		n := min(len(r.queue), DefaultMaxBatch)
		batch := append([]lostTake(nil), r.queue[:n]...)
		r.queue = append(r.queue[:0], r.queue[n:]...)
		r.active = n
		r.mu.Unlock()

		failed := r.resolve(batch)
		now := time.Now()
		var retry []lostTake
		gaveUp := 0
		var lastErr error
		for _, f := range failed {
			if now.After(f.t.until) || errors.Is(f.err, redis.ErrClosed) {
				gaveUp++
				lastErr = f.err
				continue
			}
			retry = append(retry, f.t)
		}
		if gaveUp > 0 {
			r.log.Error("quota: could not resolve lost decisions; those that reached Redis stay counted",
				slog.Int("decisions", gaveUp), slog.Any("error", lastErr))
		}
		r.mu.Lock()
		r.queue = append(retry, r.queue...)
		r.active = 0
		r.mu.Unlock()
		if len(retry) > 0 {
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
		} else {
			backoff = 50 * time.Millisecond
		}
	}
}

type failedTake struct {
	t   lostTake
	err error
}

// resolve sends one pipeline of resolutions and returns those that failed.
func (r *resolver) resolve(ts []lostTake) []failedTake {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	pipe := r.client.Pipeline()
	cmds := make([]*redis.Cmd, len(ts))
	for i := range ts {
		t := &ts[i]
		cmds[i] = pipe.Eval(ctx, resolveSource, []string{t.rec, t.counter}, t.field, r.rttl, t.amount)
	}
	start := time.Now()
	_, _ = pipe.Exec(ctx)
	took := time.Since(start)
	var failed []failedTake
	for i, c := range cmds {
		err := c.Err()
		if err != nil {
			failed = append(failed, failedTake{ts[i], err})
		}
		if r.observe != nil {
			r.observe(ctx, BackgroundObservation{Op: "resolve", Duration: took, Err: err})
		}
	}
	return failed
}
