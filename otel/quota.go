package billkitotel

import (
	"context"
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

	// byOutcome holds the duration histogram's option per outcome.
	byOutcome [quota.Failed + 1]metric.MeasurementOption
	// sets caches the options of a (outcome, plan, meter); see quotaSets.
	sets quotaSets
	// bg holds the background options per operation (settle, refund)
	// and result (ok, failed).
	bg [2][2]metric.MeasurementOption
}

func (q *quotaInstruments) init(m metric.Meter) error {
	s := instrumentSet{m: m}
	q.decisions = s.counter("billkit.quota.decisions", "{decision}",
		"Requests metered by the quota middleware, by outcome, plan and meter.")
	q.duration = s.histogram("billkit.quota.decision.duration",
		"Time spent deciding a request: the limits source and the counter store.", callBuckets)
	q.crossings = s.counter("billkit.quota.soft_limit.crossings", "{crossing}",
		"Requests that crossed their plan's soft limit.")
	q.bgCalls = s.counter("billkit.quota.background.calls", "{call}",
		"Settles and refunds sent by the quota middleware after a response.")
	q.bgDuration = s.histogram("billkit.quota.background.duration",
		"Duration of the settles and refunds sent after a response.", callBuckets)
	for o := range q.byOutcome {
		q.byOutcome[o] = metric.WithAttributeSet(attribute.NewSet(KeyOutcome.String(quota.Outcome(o).String())))
	}
	for i, op := range [...]string{"settle", "refund"} {
		for j, res := range [...]string{"ok", "failed"} {
			q.bg[i][j] = metric.WithAttributeSet(attribute.NewSet(KeyOperation.String(op), KeyOutcome.String(res)))
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
// Attribute sets are built once per outcome, plan and meter, so an
// observed decision allocates little.
func (ins *Instruments) Quota() quota.Observer {
	q := &ins.quota
	return quota.Observer{Decided: q.decided, Background: q.background}
}

func (q *quotaInstruments) decided(ctx context.Context, o quota.Observation) {
	sets := q.sets.get(o.Outcome, o.Plan, o.Meter)
	q.decisions.Add(ctx, 1, sets.decision)
	if o.Duration > 0 { // zero when no decision was attempted
		q.duration.Record(ctx, o.Duration.Seconds(), q.outcomeOption(o.Outcome))
	}
	if o.SoftLimitCrossed {
		q.crossings.Add(ctx, 1, sets.planMeter)
	}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent("billkit.quota.decision", sets.event)
	}
}

// outcomeOption returns the option that labels a duration with o.
func (q *quotaInstruments) outcomeOption(o quota.Outcome) metric.MeasurementOption {
	if int(o) < len(q.byOutcome) {
		return q.byOutcome[o]
	}
	return metric.WithAttributeSet(attribute.NewSet(KeyOutcome.String(o.String())))
}

func (q *quotaInstruments) background(ctx context.Context, b quota.BackgroundObservation) {
	res := 0
	if b.Err != nil {
		res = 1
	}
	var opt metric.MeasurementOption
	switch b.Op {
	case "settle":
		opt = q.bg[0][res]
	case "refund":
		opt = q.bg[1][res]
	default:
		opt = metric.WithAttributeSet(attribute.NewSet(KeyOperation.String(b.Op),
			KeyOutcome.String([...]string{"ok", "failed"}[res])))
	}
	q.bgCalls.Add(ctx, 1, opt)
	q.bgDuration.Record(ctx, b.Duration.Seconds(), opt)
}

// quotaKey identifies the attribute sets of one observation.
type quotaKey struct {
	outcome     quota.Outcome
	plan, meter string
}

// quotaSetOptions are the prebuilt options of one quotaKey.
type quotaSetOptions struct {
	decision  metric.MeasurementOption // outcome, plan, meter
	planMeter metric.MeasurementOption // plan, meter
	event     trace.EventOption        // outcome, plan, meter
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
		decision:  metric.WithAttributeSet(attribute.NewSet(all...)),
		planMeter: metric.WithAttributeSet(planMeter),
		event:     trace.WithAttributes(all...),
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
	next := make(map[quotaKey]*quotaSetOptions, 1+lenOf(old))
	if old != nil {
		for k, v := range *old {
			next[k] = v
		}
	}
	next[k] = s
	c.m.Store(&next)
	return s
}

func lenOf[K comparable, V any](m *map[K]V) int {
	if m == nil {
		return 0
	}
	return len(*m)
}
