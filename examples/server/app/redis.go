package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// redisConfig is a parsed REDIS_URL: exactly one of its fields is set.
type redisConfig struct {
	standalone *redis.Options
	sentinel   *redis.FailoverOptions
	cluster    *redis.ClusterOptions
}

// redisOptions parses a REDIS_URL. The accepted forms are:
//
//	redis://[user:password@]host:port[/db]            standalone
//	rediss://...                                       standalone over TLS
//	unix:///path/to/redis.sock                         standalone on a socket
//	redis+sentinel://[user:password@]host:port[/db]?master_name=NAME[&addr=host2:port2...]
//	redis+cluster://[user:password@]host:port[?addr=host2:port2...]
//
// and rediss+sentinel://, rediss+cluster:// for TLS. The sentinel and
// cluster forms are go-redis's [redis.ParseFailoverURL] and
// [redis.ParseClusterURL] with the scheme marking which one applies; query
// parameters are go-redis's (dial_timeout, read_timeout, ...).
func redisOptions(rawURL string) (redisConfig, error) {
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return redisConfig{}, errors.New("want a URL such as redis://localhost:6379/0")
	}
	base, kind, _ := strings.Cut(scheme, "+")
	if base != "redis" && base != "rediss" && !(base == "unix" && kind == "") {
		return redisConfig{}, fmt.Errorf("unsupported scheme %q: want redis, rediss, unix, redis+sentinel or redis+cluster", scheme)
	}
	u := base + "://" + rest
	var (
		c   redisConfig
		err error
	)
	switch kind {
	case "":
		c.standalone, err = redis.ParseURL(u)
		if err == nil {
			c.standalone.ContextTimeoutEnabled = true
		}
	case "sentinel":
		c.sentinel, err = redis.ParseFailoverURL(u)
		if err == nil {
			c.sentinel.ContextTimeoutEnabled = true
			if c.sentinel.MasterName == "" {
				err = errors.New("redis+sentinel:// needs ?master_name=NAME")
			}
		}
	case "cluster":
		c.cluster, err = redis.ParseClusterURL(u)
		if err == nil {
			c.cluster.ContextTimeoutEnabled = true
		}
	default:
		return redisConfig{}, fmt.Errorf("unsupported scheme %q: want redis, rediss, unix, redis+sentinel or redis+cluster", scheme)
	}
	if err != nil {
		// url.Error repeats the URL, password included: keep only its cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return redisConfig{}, err
	}
	return c, nil
}

// client returns a new client for c.
func (c redisConfig) client() redis.UniversalClient {
	switch {
	case c.sentinel != nil:
		return redis.NewFailoverClient(c.sentinel)
	case c.cluster != nil:
		return redis.NewClusterClient(c.cluster)
	default:
		return redis.NewClient(c.standalone)
	}
}

// openRedis connects to rawURL, or starts an embedded miniredis when rawURL
// is empty. The returned close function closes the client and stops the
// embedded server.
func openRedis(ctx context.Context, rawURL string, log *slog.Logger) (redis.UniversalClient, func() error, error) {
	if rawURL == "" {
		m, err := miniredis.Run()
		if err != nil {
			return nil, nil, fmt.Errorf("start embedded redis: %w", err)
		}
		log.Info("REDIS_URL is unset: using an embedded in-memory Redis (miniredis); its data is lost when the server stops", "addr", m.Addr())
		rdb := redis.NewClient(&redis.Options{Addr: m.Addr(), ContextTimeoutEnabled: true})
		return rdb, func() error { err := rdb.Close(); m.Close(); return err }, nil
	}
	c, err := redisOptions(rawURL)
	if err != nil {
		return nil, nil, &ConfigError{Var: "REDIS_URL", Err: err}
	}
	rdb := c.client()
	if err := pingRedis(ctx, rdb, 5*time.Second); err != nil {
		rdb.Close()
		return nil, nil, fmt.Errorf("REDIS_URL: redis unreachable: %w", err)
	}
	warnEviction(ctx, rdb, log)
	return rdb, rdb.Close, nil
}

// pingRedis sends PING, giving up after timeout.
func pingRedis(ctx context.Context, rdb redis.UniversalClient, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return rdb.Ping(ctx).Err()
}

// warnEviction logs a warning when Redis may evict keys under memory
// pressure. Errors (CONFIG disabled, ACLs, managed Redis) are ignored.
func warnEviction(ctx context.Context, rdb redis.UniversalClient, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	m, err := rdb.ConfigGet(ctx, "maxmemory-policy").Result()
	if err != nil {
		log.Debug("could not read redis maxmemory-policy", "err", err)
		return
	}
	if p, ok := m["maxmemory-policy"]; ok && p != "noeviction" {
		log.Warn("redis maxmemory-policy evicts keys under memory pressure: billing keys (usage counters, entitlements, webhook idempotency records) must never be evicted, or usage goes unbilled and events are applied twice; set maxmemory-policy noeviction or use a dedicated Redis",
			"maxmemory-policy", p)
	}
}
