package checkout

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"

	"github.com/billkit/billkit/internal/subject"
)

// Metadata keys that checkout attaches to every Checkout session and, through
// subscription_data.metadata, to the subscription it creates (and so to that
// subscription's invoices' lines and events).
const (
	// MetadataSubject holds the subject (the application's account ID).
	MetadataSubject = "billkit_subject"
	// MetadataTier holds the tier's name.
	MetadataTier = "billkit_tier"
)

// DefaultTimeout is the deadline of one Stripe call, retries included, when
// [Config.Timeout] is zero.
const DefaultTimeout = 10 * time.Second

const maxTrialDays = 730 // Stripe's limit for trial_period_days

// Errors returned by checkout.
var (
	// ErrInvalidConfig is returned by [New] and [NewHandler] when a
	// configuration field is invalid, and by [NewPrices], [PricesFromEnv]
	// and [PricesFromEnviron] when a tier or its prices are; the message
	// names the field, tier or environment variable at fault, never a
	// variable's value.
	ErrInvalidConfig = errors.New("checkout: invalid config")
	// ErrUnknownTier is returned when a request names a tier the catalog
	// does not hold.
	ErrUnknownTier = errors.New("checkout: unknown tier")
	// ErrInvalidRequest is returned when a session request is malformed:
	// an invalid subject (empty, over 200 bytes, or holding '{', '}' or a
	// control character), a bad email or idempotency key.
	ErrInvalidRequest = errors.New("checkout: invalid request")
	// ErrNoCustomer is returned by a [CustomerFunc] when the subject has no
	// Stripe customer yet, and by [Sessions.CreatePortalSession] when no
	// customer ID is given.
	ErrNoCustomer = errors.New("checkout: subject has no Stripe customer")
	// ErrStripe is wrapped by every error of a failed Stripe call; the
	// *stripe.Error, when there is one, is wrapped too (use errors.As).
	ErrStripe = errors.New("checkout: Stripe request failed")
	// ErrTimeout is wrapped, with [ErrStripe], by the error of a Stripe
	// call that did not finish within [Config.Timeout].
	ErrTimeout = errors.New("checkout: Stripe request timed out")
)

// Config configures [Sessions]. Zero fields mean the documented defaults;
// the zero Config is invalid, as Stripe, Catalog and the success and cancel
// URLs are required.
type Config struct {
	// Stripe is the Stripe client, built by the caller. Required. Network
	// retries are stripe-go's own: set MaxNetworkRetries on its backend
	// (see the package documentation); they reuse the request's
	// idempotency key.
	Stripe *client.API
	// Catalog maps tiers to prices: a [Prices] or any other [Catalog],
	// such as billkit's billing plans. Required; it must hold at least one
	// tier.
	Catalog Catalog
	// SuccessURL is where Stripe sends the customer after a completed
	// checkout: an absolute http or https URL, which may contain
	// {CHECKOUT_SESSION_ID}. Required.
	SuccessURL string
	// CancelURL is where Stripe sends a customer who abandons checkout: an
	// absolute http or https URL. Required.
	CancelURL string
	// PortalReturnURL is where the billing portal's return link leads: an
	// absolute http or https URL. The default value, empty, leaves it to
	// the portal configuration's default return URL in Stripe.
	PortalReturnURL string
	// TrialDays is the number of free trial days of every new subscription,
	// at most 730. The default value, 0, means no trial.
	TrialDays int
	// AllowPromotionCodes lets customers enter promotion codes on the
	// Checkout page. The default value is false.
	AllowPromotionCodes bool
	// Timeout is the deadline of each Stripe call, including stripe-go's
	// retries. stripe-go does not interrupt its sleep between two attempts
	// (0.5 s to 5 s) when the deadline passes, so a call that is being
	// retried can end up to one such sleep after it. The default value is
	// [DefaultTimeout] (10s).
	Timeout time.Duration
}

func (c *Config) setDefaults() {
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
}

func (c *Config) validate() error {
	switch {
	case c.Stripe == nil:
		return fmt.Errorf("%w: Config.Stripe is nil (build one with client.New)", ErrInvalidConfig)
	case c.Stripe.CheckoutSessions == nil || c.Stripe.BillingPortalSessions == nil:
		return fmt.Errorf("%w: Config.Stripe is not initialized (build it with client.New)", ErrInvalidConfig)
	case c.Catalog == nil:
		return fmt.Errorf("%w: Config.Catalog is nil (build one with checkout.NewPrices or checkout.PricesFromEnv)", ErrInvalidConfig)
	case c.TrialDays < 0 || c.TrialDays > maxTrialDays:
		return fmt.Errorf("%w: Config.TrialDays must be between 0 and %d, got %d", ErrInvalidConfig, maxTrialDays, c.TrialDays)
	case c.Timeout < 0:
		return fmt.Errorf("%w: Config.Timeout must not be negative", ErrInvalidConfig)
	}
	if err := validCatalog(c.Catalog); err != nil {
		return fmt.Errorf("%w: Config.Catalog: %v", ErrInvalidConfig, err)
	}
	for _, f := range []struct {
		name, value string
		required    bool
	}{
		{"Config.SuccessURL", c.SuccessURL, true},
		{"Config.CancelURL", c.CancelURL, true},
		{"Config.PortalReturnURL", c.PortalReturnURL, false},
	} {
		if f.value == "" && !f.required {
			continue
		}
		if err := validURL(f.value); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrInvalidConfig, f.name, err)
		}
	}
	return nil
}

// validCatalog checks that c lists a tier, and that each tier it lists is
// found under its name as Sessions looks it up, with a name and a price.
func validCatalog(c Catalog) error {
	names := c.Tiers()
	if len(names) == 0 {
		return errors.New("no tiers")
	}
	for _, name := range names {
		t, ok := c.Tier(normalizeTier(name))
		switch {
		case !ok:
			return fmt.Errorf("tier %q is listed but not found by Tier(%q)", name, normalizeTier(name))
		case t.Name == "":
			return fmt.Errorf("tier %q has no Name", name)
		case t.PriceID == "":
			return fmt.Errorf("tier %q has no PriceID", name)
		}
	}
	return nil
}

func validURL(s string) error {
	if s == "" {
		return errors.New("empty URL")
	}
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return errors.New("must be an absolute http or https URL")
	}
	return nil
}

// Sessions creates Stripe Checkout and billing-portal sessions for the tiers
// of a [Catalog]. It holds its own Stripe client and no global Stripe state.
//
// Sessions is safe for concurrent use. The zero value is not usable; build
// one with [New].
type Sessions struct {
	cfg Config
}

// New returns a Sessions for cfg. It returns an error wrapping
// [ErrInvalidConfig], naming the field, when cfg is invalid.
func New(cfg Config) (*Sessions, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Sessions{cfg: cfg}, nil
}

// CheckoutRequest asks for a Checkout session. The zero value is invalid:
// Subject and Tier are required.
type CheckoutRequest struct {
	// Subject identifies the application's account that subscribes; it is
	// attached as client_reference_id and as [MetadataSubject] metadata to
	// the session and its subscription. Required: 1 to 200 bytes of
	// UTF-8 without '{', '}' or control characters.
	Subject string
	// Tier names the tier to subscribe to. It is trimmed of spaces and
	// lower-cased before the catalog lookup. Required.
	Tier string
	// CustomerID is the subject's existing Stripe customer, if known.
	// Optional.
	CustomerID string
	// Email prefills the Checkout page's email (customer_email) when
	// CustomerID is empty; it is ignored otherwise. Optional.
	Email string
	// IdempotencyKey is sent to Stripe as the Idempotency-Key of the call,
	// and reused by stripe-go's retries. Sending the same key again within
	// Stripe's 24 hours returns the same session. The default value,
	// empty, means a new random key. At most 255 bytes of printable ASCII.
	IdempotencyKey string
}

// PortalRequest asks for a billing-portal session. The zero value is
// invalid: CustomerID is required.
type PortalRequest struct {
	// CustomerID is the Stripe customer whose portal opens. Required.
	CustomerID string
	// IdempotencyKey is as in [CheckoutRequest].
	IdempotencyKey string
}

// Session is a created Checkout or billing-portal session. Its JSON form,
// {"id":...,"url":...}, is what [Handler] answers; the zero value is no
// session.
type Session struct {
	// ID is the session's Stripe ID ("cs_..." or "bps_...").
	ID string `json:"id"`
	// URL is where to send the customer.
	URL string `json:"url"`
	// IdempotencyKey is the key the Stripe call was made with.
	IdempotencyKey string `json:"-"`
}

// CreateCheckoutSession creates a subscription-mode Checkout session for
// req.Tier's price (quantity 1) plus its metered price if it has one (no
// quantity), with the configured URLs, trial and promotion-code setting. The
// subject is attached as client_reference_id, and as metadata to both the
// session and subscription_data.
//
// The call has the configured deadline and one idempotency key. Errors wrap
// [ErrUnknownTier] or [ErrInvalidRequest] for a bad request (Stripe is not
// called), and [ErrStripe] (plus [ErrTimeout] on the deadline) for a failed
// call.
func (s *Sessions) CreateCheckoutSession(ctx context.Context, req CheckoutRequest) (*Session, error) {
	tier, ok := s.cfg.Catalog.Tier(normalizeTier(req.Tier))
	if !ok {
		return nil, &UnknownTierError{Tier: req.Tier, Valid: s.cfg.Catalog.Tiers()}
	}
	if err := validSubject(req.Subject); err != nil {
		return nil, err
	}
	key, err := requestKey(req.IdempotencyKey)
	if err != nil {
		return nil, err
	}
	email := strings.TrimSpace(req.Email)
	if email != "" && req.CustomerID == "" {
		if err := validEmail(email); err != nil {
			return nil, err
		}
	}

	meta := map[string]string{MetadataSubject: req.Subject, MetadataTier: tier.Name}
	subMeta := map[string]string{MetadataSubject: req.Subject, MetadataTier: tier.Name}
	p := &stripe.CheckoutSessionParams{
		Mode:              stripe.String(string(stripe.CheckoutSessionModeSubscription)),
		SuccessURL:        stripe.String(s.cfg.SuccessURL),
		CancelURL:         stripe.String(s.cfg.CancelURL),
		ClientReferenceID: stripe.String(req.Subject),
		Metadata:          meta,
		LineItems: []*stripe.CheckoutSessionLineItemParams{
			{Price: stripe.String(tier.PriceID), Quantity: stripe.Int64(1)},
		},
		SubscriptionData: &stripe.CheckoutSessionSubscriptionDataParams{Metadata: subMeta},
	}
	if tier.MeteredPriceID != "" {
		p.LineItems = append(p.LineItems, &stripe.CheckoutSessionLineItemParams{Price: stripe.String(tier.MeteredPriceID)})
	}
	if s.cfg.TrialDays > 0 {
		p.SubscriptionData.TrialPeriodDays = stripe.Int64(int64(s.cfg.TrialDays))
	}
	if s.cfg.AllowPromotionCodes {
		p.AllowPromotionCodes = stripe.Bool(true)
	}
	if req.CustomerID != "" {
		p.Customer = stripe.String(req.CustomerID)
	} else if email != "" {
		p.CustomerEmail = stripe.String(email)
	}

	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	p.Context = ctx
	p.SetIdempotencyKey(key)
	cs, err := s.cfg.Stripe.CheckoutSessions.New(p)
	if err != nil {
		return nil, stripeErr(ctx, "create checkout session", err)
	}
	return &Session{ID: cs.ID, URL: cs.URL, IdempotencyKey: key}, nil
}

// CreatePortalSession creates a billing-portal session for req.CustomerID,
// returning to the configured PortalReturnURL. The call has the configured
// deadline and one idempotency key. Errors wrap [ErrNoCustomer] or
// [ErrInvalidRequest] for a bad request, and [ErrStripe] (plus [ErrTimeout])
// for a failed call.
func (s *Sessions) CreatePortalSession(ctx context.Context, req PortalRequest) (*Session, error) {
	if req.CustomerID == "" {
		return nil, ErrNoCustomer
	}
	key, err := requestKey(req.IdempotencyKey)
	if err != nil {
		return nil, err
	}
	p := &stripe.BillingPortalSessionParams{Customer: stripe.String(req.CustomerID)}
	if s.cfg.PortalReturnURL != "" {
		p.ReturnURL = stripe.String(s.cfg.PortalReturnURL)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	p.Context = ctx
	p.SetIdempotencyKey(key)
	ps, err := s.cfg.Stripe.BillingPortalSessions.New(p)
	if err != nil {
		return nil, stripeErr(ctx, "create billing portal session", err)
	}
	return &Session{ID: ps.ID, URL: ps.URL, IdempotencyKey: key}, nil
}

// UnknownTierError is the error of a request for a tier the catalog does not
// hold. It wraps [ErrUnknownTier].
type UnknownTierError struct {
	// Tier is the tier asked for.
	Tier string
	// Valid lists the catalog's tiers, in the order of [Catalog.Tiers].
	Valid []string
}

// Error implements error.
func (e *UnknownTierError) Error() string {
	return fmt.Sprintf("checkout: unknown tier %q (valid tiers: %s)", e.Tier, strings.Join(e.Valid, ", "))
}

// Unwrap returns [ErrUnknownTier].
func (e *UnknownTierError) Unwrap() error { return ErrUnknownTier }

var _ error = (*UnknownTierError)(nil)

// validSubject applies billkit's one subject rule, [subject.Check], whose
// errors never hold the subject.
func validSubject(s string) error {
	if err := subject.Check(s); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidRequest, err)
	}
	return nil
}

// stripeErr wraps a failed Stripe call's error. ctx is the call's context,
// whose expiry marks a timeout.
func stripeErr(ctx context.Context, op string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w: %s: %w", ErrStripe, ErrTimeout, op, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrStripe, op, err)
}
