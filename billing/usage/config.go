package usage

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stripe/stripe-go/v76/client"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/quota"
)

// Entitlements is what the reporter reads of the lifecycle's entitlement
// store; [billing.EntitlementStore] satisfies it.
type Entitlements interface {
	// Get returns subject's entitlement, or billing.ErrNotFound.
	Get(ctx context.Context, subject string) (billing.Entitlement, error)
	// SubjectByCustomer returns the subject of a Stripe customer, or
	// billing.ErrNotFound.
	SubjectByCustomer(ctx context.Context, customerID string) (string, error)
	// ForEach calls fn for every entitlement, never concurrently.
	ForEach(ctx context.Context, fn func(billing.Entitlement) error) error
}

// Counters is what the reporter reads of the quota middleware's counters;
// [quota.Store] satisfies it.
type Counters interface {
	// Usage returns subject's counted units of meter in period p.
	Usage(ctx context.Context, subject, meter string, p quota.Period) (quota.Usage, error)
}

// Config configures a [Reporter]. Entitlements, Counters, Plans and Stripe
// are required; every other zero field means its documented default.
type Config struct {
	// Entitlements lists the subjects to report and maps a Stripe
	// customer to its subject. Required.
	Entitlements Entitlements
	// Counters holds the usage counters to report (the quota
	// middleware's store). Required.
	Counters Counters
	// Plans is the plan catalog: each subject is billed by its tier's
	// plan, every meter of it ([billing.Plan.AllMeters]) reported from
	// the quota counters of the meter's name: as meter events when the
	// meter has a MeterEventName (the default for new integrations), else
	// as usage records to the subscription item of its MeteredPriceID
	// (accounts pinned before 2025-03-31.basil); a meter with neither
	// bills nothing. Required.
	Plans *billing.Plans
	// Stripe is the API client that meter events and usage records are
	// sent with; its MaxNetworkRetries apply. Required.
	Stripe *client.API
	// Redis keeps the watermarks (what Stripe acknowledged) and the
	// leases (one reporter per subject), on a Redis with persistence;
	// standalone, Sentinel or Cluster. The default value nil keeps them
	// in process memory: one reporter process only, and a restart
	// forgets what was reported (meter events would be sent again).
	Redis redis.UniversalClient
	// Prefix starts every Redis key. The default value is "billkit".
	Prefix string
	// MeterCustomerKey and MeterValueKey are the payload keys of a meter
	// event that carry the Stripe customer and the quantity, as the
	// billing meter is configured. The default values are
	// "stripe_customer_id" and "value", Stripe's defaults.
	MeterCustomerKey, MeterValueKey string

	// Interval is the time between two passes of [Reporter.Run]. The
	// default value is one hour.
	Interval time.Duration
	// Rate is the number of Stripe requests per second the reporter makes
	// at most, across its workers. The default value is 20 (Stripe's
	// test-mode limit is 25 requests per second, live mode 100). When
	// Stripe answers 429 (rate limited), the reporter halves its rate,
	// pauses every call for RateLimitPause (doubling while 429s go on),
	// retries the call up to three times, and regains the rate by a tenth
	// with each success.
	Rate float64
	// Burst is the number of requests that may go out at once after an
	// idle time. The default value is 1.
	Burst int
	// RateLimitPause is how long all calls pause after Stripe answers 429.
	// The default value is one second.
	RateLimitPause time.Duration
	// Concurrency is the number of subjects reported at once by a pass.
	// The default value is 4.
	Concurrency int
	// CallTimeout is the deadline of each Stripe call, stripe-go's own
	// network retries included. The default value is 20 seconds; it must
	// be at most half of LeaseTTL.
	CallTimeout time.Duration
	// LeaseTTL is how long a reporter holds a subject's lease. A reporter
	// stops reporting the subject before four fifths of it have passed, so
	// it never makes a Stripe call on an expired lease. The default value
	// is two minutes.
	LeaseTTL time.Duration
	// FlushWait is how long [Reporter.Flush] waits for a lease another
	// reporter holds. The default value is ten seconds.
	FlushWait time.Duration
	// CounterRetention is how long the quota store keeps a counter after
	// its period ends: the quota Config.Retention. The default value is
	// quota.DefaultRetention (35 days). NewReporter refuses MaxLateness
	// plus Settle that reach it: a report after the counter expired would
	// read zero and lose the period's late usage.
	CounterRetention time.Duration
	// MaxLateness is how long after a period's end its usage is still
	// reported. The default value is one day less than CounterRetention
	// (Stripe also refuses meter events older than 35 days).
	MaxLateness time.Duration
	// Settle is how long after a period's end its counter is taken as
	// final; a settled, fully reported period's counter is not read
	// again. The default value is five minutes.
	Settle time.Duration
	// Retention is how long after a period's end its watermark is kept. It
	// must exceed MaxLateness plus Settle, so that no period is reported
	// again after its watermark expired. The default value is 45 days.
	Retention time.Duration
	// BackoffMin and BackoffMax bound the exponential backoff of a
	// subject whose reports fail: it is skipped by periodic passes (not by
	// [Reporter.Flush]) until the backoff has passed. The default values
	// are one minute and one hour.
	BackoffMin, BackoffMax time.Duration
	// IdentifierPrefix starts every report identifier and Idempotency-Key.
	// The default value is "billkit".
	IdentifierPrefix string
	// Observer receives the outcome of every report to Stripe and of
	// every pass, for metrics and traces. The default value (zero)
	// observes nothing.
	Observer Observer
	// Logger receives the reporter's outcomes. The default value is
	// slog.Default().
	Logger *slog.Logger
	// Now is the billing clock: periods, settling and backoff. The
	// default value is time.Now. Waits and lease deadlines use real time,
	// as Redis expires leases in real time.
	Now func() time.Time

	// Replacements for tests; nil means built from the fields above.
	watermarks watermarkStore
	leases     leaseStore
	meter      meterFunc
	sinks      [2]sink // by reportMode-1
}

func (c Config) withDefaults() (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return c, fmt.Errorf("%w: "+format, append([]any{billing.ErrInvalidConfig}, args...)...)
	}
	switch {
	case c.Entitlements == nil:
		return bad("reporter needs Entitlements")
	case c.Counters == nil:
		return bad("reporter needs Counters")
	case c.Plans == nil && c.meter == nil:
		return bad("reporter needs Plans")
	case c.Stripe == nil && (c.sinks[0] == nil || c.sinks[1] == nil):
		return bad("reporter needs Stripe")
	}
	if c.Prefix == "" {
		c.Prefix = billing.DefaultPrefix
	}
	if c.meter == nil {
		c.meter = planMeters(c.Plans)
	}
	if c.MeterCustomerKey == "" {
		c.MeterCustomerKey = "stripe_customer_id"
	}
	if c.MeterValueKey == "" {
		c.MeterValueKey = "value"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.Interval, time.Hour)
	def(&c.CallTimeout, 20*time.Second)
	def(&c.LeaseTTL, 2*time.Minute)
	def(&c.FlushWait, 10*time.Second)
	def(&c.CounterRetention, quota.DefaultRetention)
	def(&c.MaxLateness, c.CounterRetention-24*time.Hour)
	def(&c.Settle, 5*time.Minute)
	def(&c.Retention, 45*24*time.Hour)
	def(&c.BackoffMin, time.Minute)
	def(&c.BackoffMax, time.Hour)
	def(&c.RateLimitPause, time.Second)
	if c.Rate == 0 {
		c.Rate = 20
	}
	if c.Burst == 0 {
		c.Burst = 1
	}
	if c.Concurrency == 0 {
		c.Concurrency = 4
	}
	if c.IdentifierPrefix == "" {
		c.IdentifierPrefix = "billkit"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	switch {
	case c.Interval < 0, c.CallTimeout < 0, c.LeaseTTL < 0, c.FlushWait < 0, c.MaxLateness < 0, c.CounterRetention < 0,
		c.Settle < 0, c.Retention < 0, c.BackoffMin < 0, c.BackoffMax < 0, c.RateLimitPause < 0:
		return bad("reporter durations must not be negative")
	case c.Rate < 0 || c.Burst < 0 || c.Concurrency < 0:
		return bad("reporter Rate, Burst and Concurrency must not be negative")
	case c.CallTimeout > c.LeaseTTL/2:
		return bad("reporter CallTimeout must be at most half of LeaseTTL")
	case c.MaxLateness+c.Settle >= c.CounterRetention:
		return bad("reporter MaxLateness (%s) plus Settle (%s) must stay below CounterRetention (%s), the quota store's counter retention: a later report would read an expired counter",
			c.MaxLateness, c.Settle, c.CounterRetention)
	case c.Retention <= c.MaxLateness+c.Settle:
		return bad("reporter Retention must exceed MaxLateness plus Settle")
	case c.BackoffMax < c.BackoffMin:
		return bad("reporter BackoffMax must be at least BackoffMin")
	case len(c.IdentifierPrefix) > 50:
		return bad("reporter IdentifierPrefix is longer than 50 bytes")
	}
	if c.watermarks == nil || c.leases == nil {
		if c.Redis != nil {
			opts := redisOptions{Prefix: c.Prefix}
			if c.watermarks == nil {
				c.watermarks = newRedisWatermarks(c.Redis, opts)
			}
			if c.leases == nil {
				c.leases = newRedisLeases(c.Redis, opts)
			}
		} else {
			if c.watermarks == nil {
				c.watermarks = newMemoryWatermarks(c.Now)
			}
			if c.leases == nil {
				c.leases = newMemoryLeases(c.Now)
			}
		}
	}
	if c.sinks[reportTotals-1] == nil {
		c.sinks[reportTotals-1] = newUsageRecordSink(c.Stripe)
	}
	if c.sinks[reportDeltas-1] == nil {
		c.sinks[reportDeltas-1] = newMeterEventSink(c.Stripe, meterEventConfig{CustomerKey: c.MeterCustomerKey, ValueKey: c.MeterValueKey})
	}
	return c, nil
}
