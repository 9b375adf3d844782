//go:build prevrelease

package bench

import (
	"io"
	"log/slog"
	"net/http"

	prevquota "github.com/billkit/billkit/bench/internal/prevrelease/quota"
	"github.com/redis/go-redis/v9"
)

// extraContenders adds billkit-prev: the quota middleware of the previous
// release, built from the copy that prev.sh exports into
// internal/prevrelease (generated, git-ignored; run ./prev.sh export
// before building with -tags prevrelease).
func extraContenders() []Contender {
	return []Contender{{Name: "billkit-prev", New: newBillkitPrev}}
}

// newBillkitPrev is newBillkit on the previous release's package: the same
// Config and RedisOptions. It counts in the same keys as billkit (same
// default prefix), which is harmless: contenders never run at the same
// time and no limit is reached.
func newBillkitPrev(rdb redis.UniversalClient, p Policy, next http.Handler) (http.Handler, error) {
	store, err := prevquota.NewRedisStore(rdb, prevquota.RedisOptions{})
	if err != nil {
		return nil, err
	}
	mw, err := prevquota.New(prevquota.Config{
		Subject:  func(r *http.Request) (string, error) { return subjectOf(r), nil },
		Limits:   prevquota.StaticLimits{Plan: "bench", Included: p.Limit},
		Deadline: p.Deadline,
		Store:    store,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return nil, err
	}
	return mw.Handle(next), nil
}
