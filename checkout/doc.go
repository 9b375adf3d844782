// Package checkout creates Stripe Checkout and billing-portal sessions for
// the pricing tiers of an API sold by subscription, and serves them over
// HTTP.
//
// It imports no other public billkit package, so it can be adopted alone;
// it needs only stripe-go.
//
// # Catalog
//
// [Sessions] finds a tier's Stripe prices through a [Catalog], a small
// interface: Tier(name) returns a [Tier] (its name, price and optional
// metered price) and Tiers lists the valid names. [Prices] is the catalog
// for users of checkout alone; billkit's billing plans implement Catalog
// too, so one plan catalog configures checkout and billing alike.
//
// The prices come from configuration, never from code literals: from the
// environment with [PricesFromEnv] (PRICE_STARTER, PRICE_PRO, and an
// optional PRICE_PRO_METERED for a usage-based price, for the tiers named)
// or [PricesFromEnviron] (every PRICE_* variable of an [os.Environ] list),
// or from code with [NewPrices]. These are billkit's one parser of the
// PRICE_* variables. A catalog is validated when built: an empty or
// malformed price ID (one not starting with "price_") or a price shared by
// two tiers is an error wrapping [ErrInvalidConfig] that names the variable
// or tier, and the value itself is never echoed. Tier names are
// case-insensitive: Sessions looks a tier up trimmed and in lower case.
//
// # Sessions
//
// [Sessions] creates subscription-mode Checkout sessions with the tier's
// price (quantity 1) and, when the tier has one, its metered price (a line
// item without quantity), the configured success and cancel URLs (the
// success URL may contain {CHECKOUT_SESSION_ID}), optional trial days and
// promotion codes, and the subject's existing Stripe customer or an email to
// prefill. The subject is attached as client_reference_id and, with the
// tier, as metadata ([MetadataSubject], [MetadataTier]) to both the session
// and subscription_data, so every later subscription and invoice event maps
// back to it. It also creates billing-portal sessions for a customer.
//
// # Stripe client, retries, deadlines, idempotency
//
// Sessions holds the *client.API the caller builds; checkout never touches
// stripe.Key or package-level Stripe calls. Network retries are stripe-go's
// own: set MaxNetworkRetries on the backend. stripe-go retries connection
// errors, 409, 503 and responses with Stripe-Should-Retry: true, sleeping
// 0.5 s to 5 s between attempts, and every retry carries the same
// Idempotency-Key header:
//
//	sc := client.New(os.Getenv("STRIPE_SECRET_KEY"), &stripe.Backends{
//		API: stripe.GetBackendWithConfig(stripe.APIBackend, &stripe.BackendConfig{
//			MaxNetworkRetries: stripe.Int64(2),
//			HTTPClient:        &http.Client{Timeout: 30 * time.Second},
//		}),
//	})
//
// Every call runs under a deadline, [Config.Timeout] (default 10 s), that
// covers the retries (stripe-go does not cut short the sleep before a retry,
// so a retried call may end one sleep after its deadline), and carries one
// idempotency key: the caller's, or 128 random bits from crypto/rand.
//
// # HTTP handler
//
// [Handler] is a [net/http.Handler] for two POST endpoints, routed by the
// last element of the request path, so that it mounts on a subtree:
//
//	mux.Handle("/billing/", h) // POST /billing/checkout, POST /billing/portal
//
// [Handler.Checkout] and [Handler.Portal] return each endpoint as an
// http.Handler of its own, to mount on any path or wrap in middleware. The
// checkout endpoint takes {"tier":"pro"} (and an optional "email") and
// answers {"id":"cs_...","url":"https://checkout.stripe.com/..."}; the
// portal endpoint answers the same shape for the billing portal. The
// subject comes from the caller's authentication through a [SubjectFunc],
// never from the body (a body with a "subject" field is rejected). The
// portal finds the subject's Stripe customer through a [CustomerFunc].
// [NotConfigured] returns a Handler for a server without Stripe that
// answers every request with 503 and instructions.
//
// A client's Idempotency-Key header (1 to 255 printable ASCII characters) is
// bound to the endpoint and the subject before it reaches Stripe, whose keys
// are shared by the whole Stripe account: the same header from the same
// subject always gives the same Stripe key (and so the same session, for
// Stripe's 24 hours), and two subjects choosing the same header never share
// one.
//
// Errors are application/problem+json bodies (RFC 9457):
//
//	400  malformed JSON, unknown field, missing or unknown tier (the body
//	     lists the valid tiers in "valid_tiers"), bad email or Idempotency-Key
//	401  no subject
//	404  a path that names neither endpoint (ServeHTTP only)
//	405  not POST (with Allow: POST)
//	409  portal for a subject with no Stripe customer yet; Idempotency-Key
//	     reused with a different request
//	413  body over HandlerConfig.MaxBodyBytes (default 64 KiB)
//	415  Content-Type not application/json
//	500  the SubjectFunc returned an invalid subject (over 200 bytes, or
//	     holding '{', '}' or a control character)
//	502  Stripe answered with an error, or could not be reached
//	503  not configured (NotConfigured); customer lookup failed
//	504  Stripe did not answer within Config.Timeout
//
// A 502 or 504 body holds a generic message and, when Stripe answered,
// Stripe's request ID ("stripe_request_id") for support; never Stripe's own
// message, and never a key. The full error is logged with log/slog, to
// [HandlerConfig.Logger] (by default [log/slog.Default]).
//
// # Observing
//
// HandlerConfig.Observer receives every request's [Observation]: the
// endpoint, the catalog's tier once known, the status answered (502 and 504
// when Stripe failed) and the duration; never a subject, customer or email.
// The module github.com/billkit/billkit/otel turns it into OpenTelemetry
// instruments.
package checkout
