// Command server is billkit's sample server: an HTTP API sold by
// subscription. It composes the four billkit packages the way a service
// would: API-key authentication and the quota middleware in front of a demo
// API under /v1/, the Stripe webhook endpoint driving entitlements, Checkout
// and billing-portal endpoints, a usage endpoint and, in the background,
// the reconciliation of entitlements with Stripe (at start and every
// RECONCILE_INTERVAL, hourly by default) and the usage reporter.
//
// Usage is billed through Billing Meters by default: a plan with a meter
// event name (PLAN_<TIER>_METER_EVENT; the demo pro plan's is
// "api_requests") reports meter events. A plan with only a legacy metered
// price (PRICE_<TIER>_METERED), for accounts pinned to an API version
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
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal, a second one ends the process at once
	// instead of waiting for the drain.
	context.AfterFunc(ctx, stop)
	if err := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(1)
	}
}
