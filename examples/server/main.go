// Command server is billkit's sample server: an HTTP API sold by
// subscription. It composes the four billkit packages the way a service
// would: API-key authentication and the quota middleware in front of a demo
// API under /v1/, the Stripe webhook endpoint driving entitlements, Checkout
// and billing-portal endpoints, a usage endpoint and, in the background,
// the reconciliation of entitlements with Stripe (at start and every
// RECONCILE_INTERVAL, hourly by default) and the usage reporter.
//
// The plans have two meters, requests and tokens. POST /v1/complete, a demo
// model, counts a request and reserves the most tokens it may use before
// it runs (402 naming the meter when they do not fit), then settles the
// tokens it used with quota.Settle; GET /v1/export is a feature of the pro
// plan, gated by billing's Lifecycle.RequireFeature.
//
// Usage is billed through Billing Meters by default: a meter with a meter
// event name (PLAN_<TIER>_METER_EVENT, PLAN_<TIER>_<METER>_METER_EVENT; the
// demo pro plan's are "api_requests" and "api_tokens") reports meter
// events. A meter with only a legacy metered price (PRICE_<TIER>_METERED,
// PLAN_<TIER>_<METER>_METERED_PRICE), for accounts pinned to an API version
// before 2025-03-31.basil, reports usage records instead.
//
// It runs with no configuration at all (an embedded Redis, demo plans, a
// generated webhook secret and API key, printed on stdout); see README.md
// for the environment variables and a walk-through.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/billkit/billkit/examples/server/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal, a second one ends the process at once
	// instead of waiting for the drain.
	context.AfterFunc(ctx, stop)
	if err := app.Run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(1)
	}
}
