// Command example runs billkit's sample server (examples/server) with its
// components observed through the otel module: OpenTelemetry metrics,
// exported as Prometheus text at GET /metrics next to the sample server's
// routes, and every Stripe call counted.
//
//	cd otel/example && go run .
//
// It takes the sample server's environment variables (see
// examples/server/README.md) and runs with none at all: an embedded Redis,
// demo plans, a generated webhook secret and API key, printed on stdout.
// Then:
//
//	curl -H "Authorization: Bearer $KEY" localhost:8080/v1/hello
//	curl localhost:8080/metrics
//
// It is a module of its own, so that neither billkit nor its otel module
// depends on the Prometheus client.
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/billkit/billkit/examples/server/app"
	billkitotel "github.com/billkit/billkit/otel"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal, a second one ends the process at once.
	context.AfterFunc(ctx, stop)
	if err := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "example:", err)
		os.Exit(1)
	}
}

// run is the whole program: the sample server, observed.
func run(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	tel, err := newTelemetry()
	if err != nil {
		return err
	}
	defer tel.shutdown(context.Background())
	return app.Run(ctx, args, environ, stdout, stderr, tel.configure)
}

// telemetry is the program's OpenTelemetry setup: a MeterProvider whose
// only reader is a Prometheus exporter on a registry of its own (no
// global state), and billkit's instruments on it.
type telemetry struct {
	provider *sdkmetric.MeterProvider
	metrics  http.Handler // Prometheus text of the registry
	ins      *billkitotel.Instruments
}

func newTelemetry() (*telemetry, error) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	// Spans go to the global TracerProvider, a no-op until the program
	// installs one (otel.SetTracerProvider with an exporter of its
	// choice).
	ins, err := billkitotel.New(billkitotel.Config{MeterProvider: mp})
	if err != nil {
		return nil, err
	}
	return &telemetry{
		provider: mp,
		metrics:  promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		ins:      ins,
	}, nil
}

// configure mounts /metrics and hands the observers to the sample
// server's components.
func (t *telemetry) configure(c *app.Config) {
	c.Routes = map[string]http.Handler{"GET /metrics": t.metrics}
	c.Observe = app.Observers{
		Quota:         t.ins.Quota(),
		Webhook:       t.ins.Webhook(),
		Billing:       t.ins.Billing(),
		Usage:         t.ins.Usage(),
		Checkout:      t.ins.Checkout(),
		StripeBackend: t.ins.WrapBackend,
	}
}

func (t *telemetry) shutdown(ctx context.Context) error { return t.provider.Shutdown(ctx) }
