package app

import (
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
)

// newStripeClient returns a Stripe client for cfg, or nil when no
// STRIPE_SECRET_KEY is configured. The client is the application's own (no
// global stripe.Key), retries network failures itself, gives every call a
// deadline and logs through log.
func newStripeClient(cfg Config, log *slog.Logger) *client.API {
	if cfg.StripeSecretKey == "" {
		return nil
	}
	bc := &stripe.BackendConfig{
		HTTPClient:        &http.Client{Timeout: 30 * time.Second},
		LeveledLogger:     stripeLogger{log.With("component", "stripe")},
		MaxNetworkRetries: stripe.Int64(2),
	}
	if cfg.StripeAPIBase != "" {
		bc.URL = stripe.String(cfg.StripeAPIBase)
	}
	api := stripe.GetBackendWithConfig(stripe.APIBackend, bc)
	if wrap := cfg.Observe.StripeBackend; wrap != nil {
		api = wrap(api)
	}
	return client.New(cfg.StripeSecretKey, &stripe.Backends{
		API:     api,
		Connect: api,
		Uploads: stripe.GetBackendWithConfig(stripe.UploadsBackend, &stripe.BackendConfig{
			HTTPClient: bc.HTTPClient, LeveledLogger: bc.LeveledLogger, MaxNetworkRetries: bc.MaxNetworkRetries,
		}),
	})
}

// stripeLogger adapts slog to stripe-go's leveled logger. stripe-go's info
// messages (one per request) are logged at debug level.
type stripeLogger struct{ log *slog.Logger }

func (l stripeLogger) Debugf(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l stripeLogger) Infof(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l stripeLogger) Warnf(format string, v ...any)  { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l stripeLogger) Errorf(format string, v ...any) { l.log.Error(fmt.Sprintf(format, v...)) }

var _ stripe.LeveledLoggerInterface = stripeLogger{}
