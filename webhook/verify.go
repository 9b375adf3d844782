package webhook

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"
)

// signatureHeader is the header that carries Stripe's signature.
const signatureHeader = "Stripe-Signature"

// Reasons a delivery is rejected with 400. Their messages are safe to send
// to the caller and to log: they name no secret and quote no payload.
var (
	errNotSigned        = errors.New("the Stripe-Signature header is missing")
	errInvalidHeader    = errors.New("the Stripe-Signature header is malformed")
	errInvalidSignature = errors.New("no signature matches the payload")
	errStale            = errors.New("the signature's timestamp is outside the tolerance")
	errBadJSON          = errors.New("the body is not a valid Stripe event")
	errNoID             = errors.New("the event has no id")
	errNoType           = errors.New("the event has no type")
	errAPIVersion       = errors.New("the event's api_version is not the one this endpoint accepts")
)

// The errors of [Delivery] for the other refusals (405, 413, 400, 409),
// equally safe.
var (
	errMethod     = errors.New("the request is not a POST")
	errTooLarge   = errors.New("the body exceeds the size limit")
	errUnreadable = errors.New("the body could not be read")
	errInFlight   = errors.New("the event is being handled by another delivery")
)

// constructEvent verifies payload against the Stripe-Signature header with
// each secret in turn, checks the signature's timestamp against the clock,
// and decodes the event.
//
// The HMAC comparison and the header parsing are stripe-go's
// ([webhook.ValidatePayloadIgnoringTolerance], constant-time). The
// timestamp is checked here, against Config.Now, because stripe-go's own
// check reads the wall clock. Its rule is kept (older than Tolerance is
// stale) and made symmetric: a timestamp more than Tolerance ahead of the
// clock is rejected too. stripe-go checks only the age, so a payload signed
// with a timestamp far in the future (a leaked secret, a test fixture) would
// be accepted, and could be replayed, until that time; Stripe signs at the
// moment it sends, so only a clock off by more than Tolerance tells the two
// rules apart, and such a clock already fails stripe-go's age check the
// other way.
func (h *Handler) constructEvent(payload []byte, header string) (*stripe.Event, error) {
	if header == "" {
		return nil, errNotSigned
	}
	verified := false
	for _, secret := range h.cfg.Secrets {
		err := webhook.ValidatePayloadIgnoringTolerance(payload, header, secret)
		if err == nil {
			verified = true
			break
		}
		if errors.Is(err, webhook.ErrInvalidHeader) || errors.Is(err, webhook.ErrNotSigned) {
			return nil, errInvalidHeader
		}
	}
	if !verified {
		return nil, errInvalidSignature
	}
	ts, ok := signatureTime(header)
	if !ok {
		return nil, errStale
	}
	// No t= that stripe-go parses wraps into the window: Sub saturates,
	// and time.Unix of an extreme value lands far in the past.
	if age := h.cfg.Now().Sub(ts); age > h.cfg.Tolerance || age < -h.cfg.Tolerance {
		return nil, errStale
	}

	ev, err := decodeEvent(payload)
	if err != nil {
		return nil, errBadJSON
	}
	switch {
	case ev.ID == "":
		return nil, errNoID
	case ev.Type == "":
		return nil, errNoType
	case h.cfg.StrictAPIVersion && ev.APIVersion != stripe.APIVersion:
		return nil, errAPIVersion
	}
	return ev, nil
}

// signatureTime returns the t= timestamp of a Stripe-Signature header that
// stripe-go has accepted, read the way stripe-go reads it (the last t= wins),
// so the time checked is the time that was signed.
func signatureTime(header string) (time.Time, bool) {
	var ts time.Time
	found := false
	for _, pair := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok || k != "t" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return time.Time{}, false
		}
		ts, found = time.Unix(n, 0), true
	}
	return ts, found
}
