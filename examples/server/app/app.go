package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/billkit/billkit/billing"
	"github.com/billkit/billkit/billing/usage"
	"github.com/billkit/billkit/checkout"
	"github.com/billkit/billkit/quota"
	"github.com/billkit/billkit/webhook"
	"github.com/redis/go-redis/v9"
	"github.com/stripe/stripe-go/v76/client"
)

// Server timeouts.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 15 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 2 * time.Minute
	shutdownTimeout   = 10 * time.Second
	healthTimeout     = time.Second
	webhookLease      = 25 * time.Second // handlers get 20s, within writeTimeout
)

// Run is the whole program: it reads the configuration from environ (as
// returned by os.Environ), lets each of customize adjust it (an example
// built on this one adds its routes and observers there), prints the
// generated secrets and the listen address on stdout, logs on stderr, and
// serves until ctx is done.
func Run(ctx context.Context, args, environ []string, stdout, stderr io.Writer, customize ...func(*Config)) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { printHelp(stderr) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		printHelp(stderr)
		return fmt.Errorf("unexpected argument %q: the server is configured by environment variables", fs.Arg(0))
	}
	log := newLogger(stderr)
	cfg, err := ConfigFromEnv(environ)
	if err != nil {
		return err
	}
	for _, f := range customize {
		f(&cfg)
	}
	app, err := NewApp(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer app.Close()
	app.printGenerated(stdout)
	return app.Run(ctx, stdout)
}

// printHelp prints the command's help: its environment variables.
func printHelp(w io.Writer) {
	fmt.Fprintf(w, "Usage: server\n\nThe billkit sample server. It is configured by environment variables (<TIER> is a tier's name in upper case):\n\n")
	for _, v := range envVars() {
		fmt.Fprintf(w, "  %s\n    \t%s (default: %s)\n", v.Name, v.Help, v.Default)
	}
}

// newLogger returns a JSON logger on w, or a text logger when w is a
// terminal.
func newLogger(w io.Writer) *slog.Logger {
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			return slog.New(slog.NewTextHandler(w, nil))
		}
	}
	return slog.New(slog.NewJSONHandler(w, nil))
}

// App is the composed server. Build it with [NewApp], serve it with
// [App.Run] (or mount [App.Handler] in your own server), and release it
// with [App.Close]. Its handler is safe for concurrent use; Run is meant to
// be called once.
type App struct {
	cfg Config
	log *slog.Logger

	rdb        redis.UniversalClient
	closeRedis func() error
	stripe     *client.API // nil without STRIPE_SECRET_KEY
	keys       *apiKeys
	now        func() time.Time
	drain      time.Duration // how long Run waits for in-flight requests

	plans        *billing.Plans
	entitlements billing.EntitlementStore
	lifecycle    *billing.Lifecycle
	eventErrors  atomic.Int64 // events the lifecycle refused or dropped
	counters     quota.Store
	limits       *billing.LimitsCache
	meter        *quota.Middleware // requests
	completions  *quota.Middleware // requests, and tokens reserved then settled
	webhooks     *webhook.Handler
	checkout     *checkout.Handler
	reporter     *usage.Reporter // nil without STRIPE_SECRET_KEY

	handler http.Handler

	closeOnce sync.Once
	closeErr  error
}

// NewApp connects to Redis (or starts the embedded one), builds the Stripe
// client and every billkit component, and returns the application. The
// caller must Close it. A configuration it cannot build, such as a route
// of Config.Routes that collides with the server's own, is an error.
func NewApp(ctx context.Context, cfg Config, log *slog.Logger) (*App, error) {
	return newApp(ctx, cfg, log, time.Now)
}

// newApp is NewApp with a clock.
func newApp(ctx context.Context, cfg Config, log *slog.Logger, now func() time.Time) (*App, error) {
	rdb, closeRedis, err := openRedis(ctx, cfg.RedisURL, log)
	if err != nil {
		return nil, err
	}
	a := &App{
		cfg:        cfg,
		log:        log,
		rdb:        rdb,
		closeRedis: closeRedis,
		stripe:     newStripeClient(cfg, log),
		keys:       newAPIKeys(cfg.APIKeys),
		now:        now,
		drain:      shutdownTimeout,
	}
	if err := a.build(); err != nil {
		a.Close()
		return nil, err
	}
	if a.stripe == nil {
		log.Warn("STRIPE_SECRET_KEY is unset: /billing/checkout and /billing/portal answer 503 and usage is not reported to Stripe")
	}
	if a.stripe != nil && cfg.DemoPrices && cfg.StripeAPIBase == "" {
		log.Warn("STRIPE_SECRET_KEY is set without PRICE_STARTER and PRICE_PRO: the demo price IDs exist in no Stripe account, so Stripe will refuse checkout; set your prices")
	}
	if cfg.DemoPrices {
		pro, _ := cfg.Plans.ByTier("pro")
		events := []any{"starter", demoPriceStarter, "pro", demoPricePro}
		for _, m := range pro.AllMeters() {
			events = append(events, "pro_"+m.Name+"_meter_event", m.MeterEventName)
		}
		log.Info("no PRICE_* variable is set: using the demo plans, walk the lifecycle with send-event", events...)
	}
	return a, nil
}

// build creates the billkit components and the routes.
func (a *App) build() error {
	if a.plans = a.cfg.Plans; a.plans == nil {
		return errors.New("no plans configured (Config.Plans)")
	}

	// Entitlements: what each subject's subscription allows, driven by
	// Stripe's events.
	var err error
	if a.entitlements, err = billing.NewRedisStore(a.rdb, billing.RedisOptions{Now: a.now}); err != nil {
		return err
	}
	// Run (started by App.Run) reconciles the entitlements with Stripe's
	// subscriptions at start and every ReconcileEvery, repairing what
	// missed webhook events left behind; without Stripe it only sweeps
	// the events parked for customers not linked to a subject yet.
	lifecycle, err := billing.NewLifecycle(billing.Config{
		Store:          a.entitlements,
		Plans:          a.plans,
		Grace:          gracePolicy(),
		Stripe:         a.stripe,
		ReconcileEvery: a.cfg.ReconcileInterval,
		// The lifecycle's limits cache enforces a change in this
		// process at once (other processes within its one-second TTL).
		OnChange: func(ctx context.Context, before, after billing.Entitlement) {
			a.log.InfoContext(ctx, "entitlement changed", "subject", after.Subject,
				"status", string(after.Status), "tier", after.Tier, "previous_status", string(before.Status))
		},
		// An event the lifecycle refused (Stripe retries it) or dropped
		// is already logged at ERROR; count it, and alert here in a
		// real service.
		OnEventError: func(context.Context, *billing.EventError) { a.eventErrors.Add(1) },
		Observer:     a.cfg.Observe.Billing,
		Logger:       a.log.With("component", "billing"),
		Now:          a.now,
	})
	if err != nil {
		return err
	}
	a.lifecycle = lifecycle
	a.limits = lifecycle.Limits()

	// Quota: every /v1/ request is counted against the caller's plan.
	if a.counters, err = quota.NewRedisStore(a.rdb, quota.RedisOptions{
		Logger:     a.log.With("component", "quota"),
		Background: a.cfg.Observe.Quota.Background,
	}); err != nil {
		return err
	}
	if a.meter, err = quota.New(quota.Config{
		Subject:     subjectOf,
		Limits:      a.limits,
		Store:       a.counters,
		OnSoftLimit: a.onSoftLimit,
		Observer:    a.cfg.Observe.Quota,
		Logger:      a.log.With("component", "quota"),
		Now:         a.now,
	}); err != nil {
		return err
	}
	// Completions: requests, and tokens reserved then settled.
	if a.completions, err = a.newCompletions(a.counters); err != nil {
		return err
	}

	// Webhooks: verified, exactly-once Stripe events.
	events, err := webhook.NewRedisStore(a.rdb, webhook.RedisOptions{})
	if err != nil {
		return err
	}
	if a.webhooks, err = webhook.New(webhook.Config{
		Secrets: a.cfg.WebhookSecrets,
		Store:   events,
		// Handlers must finish (HandlerTimeout, four fifths of the lease)
		// before the server's WriteTimeout cuts the response.
		Lease:    webhookLease,
		Observer: a.cfg.Observe.Webhook,
		Logger:   a.log.With("component", "webhook"),
		Now:      a.now,
	}); err != nil {
		return err
	}
	lifecycle.Register(a.webhooks)

	// Checkout and the billing portal, and the usage reporter: they need
	// Stripe.
	if a.stripe == nil {
		a.checkout = checkout.NotConfigured("Set STRIPE_SECRET_KEY to a Stripe test key (or to any sk_test_ key with STRIPE_API_BASE pointing at stripe-mock) to enable checkout and the billing portal.")
	} else {
		if err := a.buildStripe(); err != nil {
			return err
		}
	}

	a.handler, err = a.routes()
	return err
}

// newCompletions returns the quota middleware of POST /v1/complete, on
// store. Completions count as requests too, and their tokens are known
// only once the reply is generated: the same decision (one round trip)
// counts the request and reserves the completion's most tokens, refusing
// it with 402 when they do not fit under the plan's token cap; the handler
// settles what it used, and the middleware counts that after the
// response. Its Close, in App.Run and App.Close, waits for the last
// settles.
func (a *App) newCompletions(store quota.Store) (*quota.Middleware, error) {
	return quota.New(quota.Config{
		Subject:     subjectOf,
		Limits:      a.limits,
		Store:       store,
		Reserve:     []quota.Reservation{{Meter: tokensMeter, Estimate: estimateTokens}},
		OnSoftLimit: a.onSoftLimit,
		Observer:    a.cfg.Observe.Quota,
		Logger:      a.log.With("component", "quota"),
		Now:         a.now,
	})
}

// onSoftLimit logs a subject's crossing of a soft limit.
func (a *App) onSoftLimit(ctx context.Context, d quota.Decision) {
	a.log.InfoContext(ctx, "soft limit reached", "subject", d.Subject, "plan", d.Plan, "used", d.Used, "soft", d.Soft)
}

// buildStripe creates the checkout handler and the usage reporter.
func (a *App) buildStripe() error {
	// The plans are checkout's catalog: each tier sells the prices its
	// plan declares.
	sessions, err := checkout.New(checkout.Config{
		Stripe:          a.stripe,
		Catalog:         a.plans,
		SuccessURL:      a.cfg.PublicURL + "/billing/success?session_id={CHECKOUT_SESSION_ID}",
		CancelURL:       a.cfg.PublicURL + "/billing/cancel",
		PortalReturnURL: a.cfg.PublicURL + "/billing/usage",
	})
	if err != nil {
		return err
	}
	if a.checkout, err = checkout.NewHandler(checkout.HandlerConfig{
		Sessions: sessions,
		Subject:  subjectOf,
		Customer: a.customerOf,
		Observer: a.cfg.Observe.Checkout,
		Logger:   a.log.With("component", "checkout"),
	}); err != nil {
		return err
	}

	// The reporter routes each subject by its plan: meter events for plans
	// billed through Billing Meters (a meter event name, the default),
	// usage records for plans with only a legacy metered price (accounts
	// pinned before 2025-03-31.basil). Its watermarks and leases live in
	// Redis.
	if a.reporter, err = usage.NewReporter(usage.Config{
		Entitlements: a.entitlements,
		Counters:     a.counters,
		Plans:        a.plans,
		Stripe:       a.stripe,
		Redis:        a.rdb,
		Interval:     a.cfg.ReportInterval,
		Observer:     a.cfg.Observe.Usage,
		Logger:       a.log.With("component", "usage-reporter"),
		Now:          a.now,
	}); err != nil {
		return err
	}
	// invoice.created flushes the customer's usage, so that it reaches
	// Stripe before the invoice is finalized.
	a.reporter.Register(a.webhooks)
	return nil
}

// gracePeriod is how long a subscriber whose payment failed keeps access.
const gracePeriod = 7 * 24 * time.Hour

// gracePolicy is what a past_due subscriber keeps: the starter plan's
// (graceTier's) limits for gracePeriod after the payment failed, then
// nothing.
func gracePolicy() billing.GracePolicy { return billing.DowngradeTo(graceTier, gracePeriod) }

// customerOf returns subject's Stripe customer, for the billing portal.
func (a *App) customerOf(ctx context.Context, subject string) (string, error) {
	e, err := a.entitlements.Get(ctx, subject)
	if errors.Is(err, billing.ErrNotFound) || (err == nil && e.CustomerID == "") {
		return "", checkout.ErrNoCustomer
	}
	return e.CustomerID, err
}

// Handler returns the application's HTTP handler.
func (a *App) Handler() http.Handler { return a.handler }

// printGenerated prints the generated secrets, one "name: value" line each,
// for a person or a script to read.
func (a *App) printGenerated(w io.Writer) {
	if a.cfg.WebhookSecretGenerated {
		fmt.Fprintf(w, "webhook secret: %s\n", a.cfg.WebhookSecrets[0])
	}
	if a.cfg.APIKeyGenerated {
		keys := make([]string, 0, len(a.cfg.APIKeys))
		for k := range a.cfg.APIKeys {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "demo api key: %s\n", k)
		}
	}
}

// Run listens on the configured address, prints "listening on ADDR" on
// stdout, runs the reconciliation and the usage reporter in the background
// and serves until ctx is done. It then stops accepting connections, waits
// for in-flight requests (up to a deadline, after which it closes their
// connections and returns an error), waits for their settles to reach
// Redis and stops the background work.
func (a *App) Run(ctx context.Context, stdout io.Writer) error {
	ln, err := net.Listen("tcp", a.cfg.Addr)
	if err != nil {
		return &ConfigError{Var: "ADDR", Err: err}
	}
	srv := &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	fmt.Fprintf(stdout, "listening on %s\n", ln.Addr())
	a.log.Info("listening", "addr", ln.Addr().String())

	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()
	var wg sync.WaitGroup
	a.startBackground(bg, &wg)

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	select {
	case err = <-serveErr:
		// Serve failed before shutdown was asked for.
		stopBG()
		wg.Wait()
		return err
	case <-ctx.Done():
	}
	a.log.Info("shutting down: draining in-flight requests", "timeout", a.drain.String())
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.drain)
	defer cancel()
	err = srv.Shutdown(sctx)
	if err != nil {
		// The drain deadline passed: cut the remaining connections, so
		// that no handler runs on after Run returns and Close releases
		// Redis.
		srv.Close()
	}
	// The last requests' settles run after their responses: let them
	// reach Redis (and so the reporter) before anything stops.
	a.closeMeters()
	stopBG()
	wg.Wait()
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	a.log.Info("stopped")
	return nil
}

// startBackground starts, each in a goroutine counted by wg, the
// lifecycle's reconciliation (at once, then every ReconcileInterval) and,
// with Stripe, the usage reporter. Both run until ctx is done.
func (a *App) startBackground(ctx context.Context, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		what := "reconciliation"
		if a.stripe == nil {
			what = "sweep of parked events" // nothing to reconcile with
		}
		a.log.Info(what+" started", "interval", a.cfg.ReconcileInterval.String())
		a.lifecycle.Run(ctx)
		a.log.Info(what + " stopped")
	}()
	if a.reporter == nil {
		return
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.log.Info("usage reporter started", "interval", a.cfg.ReportInterval.String())
		a.reporter.Run(ctx)
		a.log.Info("usage reporter stopped")
	}()
}

// Close waits for the quota middlewares' background settles and refunds,
// then releases Redis (and stops the embedded one). Call it once no
// request is served any more. It is idempotent.
func (a *App) Close() error {
	a.closeOnce.Do(func() {
		a.closeMeters()
		if a.closeRedis != nil {
			a.closeErr = a.closeRedis()
		}
	})
	return a.closeErr
}

// closeMeters waits until the quota middlewares' settles and refunds,
// which run after the responses, have reached the store (each bounded by
// its own deadline), and the store's own resolutions. Requests served
// afterwards still work.
func (a *App) closeMeters() {
	for _, m := range []*quota.Middleware{a.meter, a.completions} {
		if m != nil {
			m.Close()
		}
	}
	// The store resolves, by itself, decisions whose outcome a broken
	// connection or a passed deadline hid; they too must reach Redis.
	if rs, ok := a.counters.(*quota.RedisStore); ok {
		ctx, cancel := context.WithTimeout(context.Background(), quota.DefaultRefundWindow/2)
		defer cancel()
		if err := rs.Wait(ctx); err != nil {
			a.log.Error("quota: lost decisions still unresolved at shutdown", "err", err)
		}
	}
}

// healthz answers 200 when Redis answers PING within a short deadline, and
// 503 otherwise.
func (a *App) healthz(w http.ResponseWriter, r *http.Request) {
	if err := pingRedis(r.Context(), a.rdb, healthTimeout); err != nil {
		a.log.Warn("health check: redis unreachable", "err", err)
		writeProblem(w, http.StatusServiceUnavailable, "Redis is unreachable.")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}
