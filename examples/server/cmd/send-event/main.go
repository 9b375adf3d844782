// Command send-event sends signed, Stripe-shaped webhook events to the
// sample server, so that a subscription's whole lifecycle can be walked
// offline:
//
//	go run ./examples/server/cmd/send-event -secret whsec_... checkout-completed
//	go run ./examples/server/cmd/send-event -secret whsec_... subscription-created -tier pro
//	go run ./examples/server/cmd/send-event -secret whsec_... payment-failed
//	go run ./examples/server/cmd/send-event -secret whsec_... invoice-paid
//	go run ./examples/server/cmd/send-event -secret whsec_... subscription-deleted
//
// Events are built and signed with billkit's webhook/webhooktest package,
// exactly as Stripe signs them. The price IDs come from PRICE_<TIER> and
// PRICE_<TIER>_METERED, read by checkout.PricesFromEnviron as the server's
// plans read them, else from the demo plans.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/billkit/billkit/checkout"
	"github.com/billkit/billkit/examples/server/internal/demo"
	"github.com/billkit/billkit/webhook/webhooktest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "send-event:", err)
		}
		os.Exit(2)
	}
}

// run parses args ([flags] EVENT [flags]), builds the event, signs it and
// posts it, printing the server's answer on stdout. environ is the
// environment, as returned by os.Environ.
func run(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("send-event", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://localhost:8080/billing/webhook", "the server's webhook endpoint")
	secret := fs.String("secret", "", "webhook signing secret (default $STRIPE_WEBHOOK_SECRET)")
	subject := fs.String("subject", "demo", "the subscriber's subject (the API key's subject)")
	customer := fs.String("customer", "", "Stripe customer ID (default cus_demo_<subject>)")
	subscription := fs.String("subscription", "", "Stripe subscription ID (default sub_demo_<subject>)")
	tier := fs.String("tier", "pro", "the plan's tier: starter or pro")
	status := fs.String("status", "active", "subscription status, for subscription-created and subscription-updated")
	printOnly := fs.Bool("print", false, "print the signed event instead of sending it")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: send-event [flags] EVENT\n\nEVENT is one of: %s\n\nFlags:\n", strings.Join(demo.Kinds(), ", "))
		fs.PrintDefaults()
	}
	// Accept flags before and after the event name.
	if err := fs.Parse(args); err != nil {
		return err
	}
	kind := fs.Arg(0)
	if fs.NArg() > 1 {
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			fs.Usage()
			return fmt.Errorf("unexpected argument %q", fs.Arg(0))
		}
	}
	if kind == "" {
		fs.Usage()
		return errors.New("no event named")
	}
	if *secret == "" {
		*secret = lookup(environ, "STRIPE_WEBHOOK_SECRET")
	}
	if *secret == "" && !*printOnly {
		return errors.New("no webhook secret: pass -secret (the server prints \"webhook secret: whsec_...\" at start) or set STRIPE_WEBHOOK_SECRET")
	}

	// The server's prices: PRICE_* as billkit reads them, else the demo
	// plans'.
	env, _ := demo.Environ(environ)
	prices, err := checkout.PricesFromEnviron(env)
	if err != nil {
		return err
	}
	t, ok := prices.Tier(*tier)
	if !ok {
		return fmt.Errorf("no price for tier %q: set %s (tiers: %s)", *tier, checkout.EnvVar(*tier), strings.Join(prices.Tiers(), ", "))
	}
	now := time.Now()
	typ, obj, err := demo.Event(kind, demo.Subscription{
		Subject:        *subject,
		Customer:       *customer,
		ID:             *subscription,
		Tier:           t.Name,
		PriceID:        t.PriceID,
		MeteredPriceID: t.MeteredPriceID,
		Status:         stripe.SubscriptionStatus(*status),
	}, now)
	if err != nil {
		return err
	}
	payload := webhooktest.NewEvent(typ, obj, webhooktest.WithCreated(now))
	sig := webhooktest.Sign(*secret, payload, now)
	if *printOnly {
		fmt.Fprintf(stdout, "Stripe-Signature: %s\n\n%s\n", sig, payload)
		return nil
	}

	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, *url, bytes.NewReader(payload))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set(webhooktest.SignatureHeader, sig)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	fmt.Fprintf(stdout, "%s %s -> %s %s\n", typ, webhooktest.EventID(payload), resp.Status, bytes.TrimSpace(body))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("the server answered %s", resp.Status)
	}
	return nil
}

// lookup returns the value of the variable name in environ, "" when unset.
func lookup(environ []string, name string) string {
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
}
