package webhooktest

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/stripe/stripe-go/v76/webhook"
)

// SignatureHeader is the name of the header that carries the signature.
const SignatureHeader = "Stripe-Signature"

// Sign returns the Stripe-Signature header value that signs payload with
// secret at time now, as Stripe does (t=UNIX,v1=HEX), computed by stripe-go's
// [webhook.GenerateTestSignedPayload].
func Sign(secret string, payload []byte, now time.Time) string {
	return webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{
		Payload:   payload,
		Secret:    secret,
		Timestamp: now,
	}).Header
}

// Request returns a POST request to "/webhook" carrying payload, signed
// with secret at the current time, ready for a handler's ServeHTTP.
func Request(secret string, payload []byte) *http.Request {
	return RequestAt(secret, payload, time.Now())
}

// RequestAt is like [Request] with the signature's time set to now.
func RequestAt(secret string, payload []byte, now time.Time) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/webhook", bytes.NewReader(payload))
	r.Header.Set("Content-Type", "application/json; charset=utf-8")
	r.Header.Set("User-Agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
	r.Header.Set(SignatureHeader, Sign(secret, payload, now))
	return r
}
