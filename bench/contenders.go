// Package bench compares billkit's quota middleware with peer Redis-backed
// rate limiters, through the same http.Handler path and on the same
// redis-server: ulule/limiter (fixed window), go-redis/redis_rate (GCRA) and
// throttled (GCRA), plus two floors, a bare handler and one INCR round trip
// per request.
//
// It is a module of its own so that users of billkit never download the
// peers. See README.md for the figures and run.sh for the command.
package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/billkit/billkit/quota"
	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"github.com/throttled/throttled/v2"
	goredisstore "github.com/throttled/throttled/v2/store/goredisstore.v9"
	"github.com/ulule/limiter/v3"
	"github.com/ulule/limiter/v3/drivers/middleware/stdlib"
	ulredis "github.com/ulule/limiter/v3/drivers/store/redis"
)

// SubjectHeader carries the subject of a benchmark request. Every contender
// reads its key from it, so that the subject lookup costs the same for all.
const SubjectHeader = "X-Subject"

func subjectOf(r *http.Request) string {
	return r.Header.Get(SubjectHeader)
}

// Contender is one limiter under test.
type Contender struct {
	// Name identifies the contender in benchmark names and tables.
	Name string
	// New wraps next in the contender's middleware, counting in rdb, with
	// the policy p.
	New func(rdb redis.UniversalClient, p Policy, next http.Handler) (http.Handler, error)
}

// Policy is what every contender is configured with.
type Policy struct {
	// Limit is the number of requests allowed per window: a calendar
	// month for billkit, an hour for the peers. The floors ignore it.
	Limit int64
	// Deadline is billkit's decision deadline (quota.Config.Deadline);
	// zero means billkit's default, 100ms. The peers have no such
	// setting: they wait as long as go-redis does (3s read timeout, dial
	// retries).
	Deadline time.Duration
}

// Contenders returns every contender: billkit first (the base that
// benchstat and the ratio table compare with), then those that build tags
// add (extraContenders; none without tags), then the peers, then the
// floors.
func Contenders() []Contender {
	cs := []Contender{{Name: "billkit", New: newBillkit}}
	cs = append(cs, extraContenders()...)
	return append(cs, []Contender{
		{Name: "ulule", New: newUlule},
		{Name: "redis_rate", New: newRedisRate},
		{Name: "throttled", New: newThrottled},
		{Name: "incr", New: newIncr},
		{Name: "bare", New: newBare},
	}...)
}

// NewClient returns the go-redis client every contender shares: the
// defaults, plus ContextTimeoutEnabled, which billkit requires.
func NewClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
}

func newBare(_ redis.UniversalClient, _ Policy, next http.Handler) (http.Handler, error) {
	return next, nil
}

// newIncr is the floor of any Redis-backed limiter: one INCR round trip.
func newIncr(rdb redis.UniversalClient, _ Policy, next http.Handler) (http.Handler, error) {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := rdb.Incr(r.Context(), "incr:{"+subjectOf(r)+"}").Err(); err != nil {
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		next.ServeHTTP(w, r)
	}), nil
}

func newBillkit(rdb redis.UniversalClient, p Policy, next http.Handler) (http.Handler, error) {
	store, err := quota.NewRedisStore(rdb, quota.RedisOptions{})
	if err != nil {
		return nil, err
	}
	mw, err := quota.New(quota.Config{
		Subject:  func(r *http.Request) (string, error) { return subjectOf(r), nil },
		Limits:   quota.StaticLimits{Plan: "bench", Included: p.Limit},
		Deadline: p.Deadline,
		Store:    store,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return nil, err
	}
	return mw.Handle(next), nil
}

func newUlule(rdb redis.UniversalClient, p Policy, next http.Handler) (http.Handler, error) {
	store, err := ulredis.NewStore(rdb)
	if err != nil {
		return nil, err
	}
	l := limiter.New(store, limiter.Rate{Period: time.Hour, Limit: p.Limit})
	return stdlib.NewMiddleware(l, stdlib.WithKeyGetter(subjectOf)).Handler(next), nil
}

// newRedisRate wraps redis_rate, which has no HTTP middleware, in the
// smallest one: 429 with Retry-After when denied, 500 on a Redis error, and
// X-RateLimit-Remaining as its result gives it.
func newRedisRate(rdb redis.UniversalClient, p Policy, next http.Handler) (http.Handler, error) {
	l := redis_rate.NewLimiter(rdb)
	lim := redis_rate.Limit{Rate: int(p.Limit), Burst: int(p.Limit), Period: time.Hour}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res, err := l.Allow(r.Context(), subjectOf(r), lim)
		if err != nil {
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("X-RateLimit-Remaining", strconv.Itoa(res.Remaining))
		if res.Allowed == 0 {
			h.Set("Retry-After", strconv.Itoa(int(res.RetryAfter/time.Second)+1))
			http.Error(w, "limit exceeded", http.StatusTooManyRequests)
			return
		}
		next.ServeHTTP(w, r)
	}), nil
}

type varyBySubject struct{}

func (varyBySubject) Key(r *http.Request) string { return subjectOf(r) }

func newThrottled(rdb redis.UniversalClient, p Policy, next http.Handler) (http.Handler, error) {
	store, err := goredisstore.NewCtx(rdb, "throttled:")
	if err != nil {
		return nil, err
	}
	rl, err := throttled.NewGCRARateLimiterCtx(store, throttled.RateQuota{
		MaxRate:  throttled.PerHour(int(p.Limit)),
		MaxBurst: int(p.Limit) - 1,
	})
	if err != nil {
		return nil, err
	}
	h := &throttled.HTTPRateLimiterCtx{RateLimiter: rl, VaryBy: varyBySubject{}}
	return h.RateLimit(next), nil
}

// OK is the handler behind every limiter: 204, no body.
var OK = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
	w.WriteHeader(http.StatusNoContent)
})

// CommandStats returns the number of calls of every command that redis-server
// counted in INFO commandstats (commands run inside Lua scripts included),
// leaving out INFO itself.
func CommandStats(ctx context.Context, rdb redis.UniversalClient) (map[string]int64, error) {
	s, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, err
	}
	return parseCommandStats(s)
}

// parseCommandStats reads lines such as
// cmdstat_evalsha:calls=12,usec=34,usec_per_call=2.83,rejected_calls=0,failed_calls=0.
func parseCommandStats(s string) (map[string]int64, error) {
	out := make(map[string]int64)
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		name, rest, ok := strings.Cut(line, ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") || name == "cmdstat_info" {
			continue
		}
		calls, _, _ := strings.Cut(rest, ",")
		v, ok := strings.CutPrefix(calls, "calls=")
		if !ok {
			return nil, fmt.Errorf("bench: unexpected commandstats line %q", line)
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bench: commandstats line %q: %w", line, err)
		}
		out[strings.TrimPrefix(name, "cmdstat_")] = n
	}
	return out, nil
}

// Delta returns the sum of after's counts minus before's.
func Delta(before, after map[string]int64) int64 {
	var n int64
	for k, v := range after {
		n += v - before[k]
	}
	return n
}
