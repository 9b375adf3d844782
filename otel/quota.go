package billkitotel

import (
	"context"
	"maps"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/billkit/billkit/quota"
)

// maxCachedSets bounds the attribute sets cached per (outcome, plan,
// meter). Plans and meters come from the configuration, so a real catalog
// stays far below it; past it, sets are built per call instead of cached.
const maxCachedSets = 1024

// quotaInstruments are the quota middleware's instruments.
type quotaInstruments struct {
	decisions  metric.Int64Counter
	duration   metric.Float64Histogram
	crossings  metric.Int64Counter
	bgCalls    metric.Int64Counter
	bgDuration metric.Float64Histogram

	// The options are held in slices built once: passing a slice with
	// ... allocates nothing, where a variadic argument list would escape
	// to the heap through the instrument's interface.

	// byOutcome holds the duration histogram's options per outcome.
	byOutcome [quota.Failed + 1][]metric.RecordOption
	// sets caches the options of a (outcome, plan, meter); see quotaSets.
	sets quotaSets
	// bg holds the background options per operation (settle, refund,
	// resolve) and result (ok, failed; see bgResult).
	bg [3][2]bgOptions
}

// bgOptions label one kind of background call.
type bgOptions struct {
	add    []metric.AddOption
	record []metric.RecordOption
}

func newBgOptions(op, result string) bgOptions {
	opt := metric.WithAttributeSet(attribute.NewSet(KeyOperation.String(op), KeyOutcome.String(result)))
	return bgOptions{add: []metric.AddOption{opt}, record: []metric.RecordOption{opt}}
}

func (q *quotaInstruments) init(m metric.Meter) error {
	s := instrumentSet{m: m}
	q.decisions = s.counter("billkit.quota.decisions", "{decision}",
		"Requests metered by the quota middleware, by outcome, plan and meter.")
	q.duration = s.histogram("billkit.quota.decision.duration",
		"Time spent deciding a request: the limits source and the counter store.", callBuckets())
	q.crossings = s.counter("billkit.quota.soft_limit.crossings", "{crossing}",
		"Requests that crossed their plan's soft limit.")
	q.bgCalls = s.counter("billkit.quota.background.calls", "{call}",
		"Settles and refunds sent by the quota middleware after a response, and lost takes resolved by the store.")
	q.bgDuration = s.histogram("billkit.quota.background.duration",
		"Duration of the settles, refunds and resolutions sent after a response.", callBuckets())
	for o := range q.byOutcome {
		q.byOutcome[o] = outcomeOptions(quota.Outcome(o))
	}
	for i, op := range [...]string{opSettle, opRefund, opResolve} {
		for j := range q.bg[i] {
			q.bg[i][j] = newBgOptions(op, bgResult(j))
		}
	}
	return s.err()
}

// Quota returns an observer for quota.Config.Observer. It records
// billkit.quota.decisions, billkit.quota.decision.duration,
// billkit.quota.soft_limit.crossings, billkit.quota.background.calls and
// billkit.quota.background.duration, and adds a "billkit.quota.decision"
// event, with the outcome, plan and meter, to the request's span when it is
// recording. The subject is recorded nowhere.
//
// Attribute sets are built once per outcome, plan and meter: with the
// OpenTelemetry SDK, an observed decision then allocates nothing, unless
// the request's span is recording (the span event allocates).
func (ins *Instruments) Quota() quota.Observer {
	q := &ins.quota
	return quota.Observer{Decided: q.decided, Background: q.background}
}

func (q *quotaInstruments) decided(ctx context.Context, o quota.Observation) {
	sets := q.sets.get(o.Outcome, o.Plan, o.Meter)
	q.decisions.Add(ctx, 1, sets.decision...)
	if o.Duration > 0 { // zero when no decision was attempted
		var opts []metric.RecordOption
		if int(o.Outcome) < len(q.byOutcome) {
			opts = q.byOutcome[o.Outcome]
		} else {
			opts = outcomeOptions(o.Outcome)
		}
		q.duration.Record(ctx, o.Duration.Seconds(), opts...)
	}
	if o.SoftLimitCrossed {
		q.crossings.Add(ctx, 1, sets.planMeter...)
	}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent("billkit.quota.decision", sets.event...)
	}
}

// outcomeOptions returns the options that label a duration with o.
func outcomeOptions(o quota.Outcome) []metric.RecordOption {
	return []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(KeyOutcome.String(o.String())))}
}

// The operations of quota.BackgroundObservation.
const (
	opSettle  = "settle"
	opRefund  = "refund"
	opResolve = "resolve" // quota.RedisOptions.Background
)

// bgResult names the result of a background call: 0 "ok", 1 "failed".
func bgResult(i int) string {
	if i == 0 {
		return "ok"
	}
	return "failed"
}

func (q *quotaInstruments) background(ctx context.Context, b quota.BackgroundObservation) {
	res := 0
	if b.Err != nil {
		res = 1
	}
	var opts bgOptions
	switch b.Op {
	case opSettle:
		opts = q.bg[0][res]
	case opRefund:
		opts = q.bg[1][res]
	case opResolve:
		opts = q.bg[2][res]
	default:
		opts = newBgOptions(b.Op, bgResult(res))
	}
	q.bgCalls.Add(ctx, 1, opts.add...)
	q.bgDuration.Record(ctx, b.Duration.Seconds(), opts.record...)
}

// quotaKey identifies the attribute sets of one observation.
type quotaKey struct {
	outcome     quota.Outcome
	plan, meter string
}

// quotaSetOptions are the prebuilt options of one quotaKey.
type quotaSetOptions struct {
	decision  []metric.AddOption // outcome, plan, meter
	planMeter []metric.AddOption // plan, meter
	event     []trace.EventOption
}

// quotaSets caches quotaSetOptions by quotaKey. Reads load an immutable
// map without locking or allocating; a miss copies the map under mu. It is
// safe for concurrent use; its zero value is an empty cache.
type quotaSets struct {
	m  atomic.Pointer[map[quotaKey]*quotaSetOptions]
	mu sync.Mutex
}

func (c *quotaSets) get(outcome quota.Outcome, plan, meter string) *quotaSetOptions {
	k := quotaKey{outcome, plan, meter}
	if m := c.m.Load(); m != nil {
		if s, ok := (*m)[k]; ok {
			return s
		}
	}
	kvs := appendIf(appendIf(make([]attribute.KeyValue, 0, 3), KeyPlan, plan), KeyMeter, meter)
	planMeter := attribute.NewSet(kvs...)
	all := append(kvs, KeyOutcome.String(outcome.String()))
	s := &quotaSetOptions{
		decision:  []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(all...))},
		planMeter: []metric.AddOption{metric.WithAttributeSet(planMeter)},
		event:     []trace.EventOption{trace.WithAttributes(all...)},
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m.Load()
	if old != nil {
		if cached, ok := (*old)[k]; ok {
			return cached
		}
		if len(*old) >= maxCachedSets {
			return s
		}
	}
	next := map[quotaKey]*quotaSetOptions{}
	if old != nil {
		next = maps.Clone(*old)
	}
	next[k] = s
	c.m.Store(&next)
	return s
}
