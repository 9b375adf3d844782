package checkout

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/mail"
)

// IdempotencyHeader is the request header from which [Handler] takes the
// client's idempotency key.
const IdempotencyHeader = "Idempotency-Key"

const (
	maxIdempotencyKeyLen = 255 // Stripe's limit
	maxEmailLen          = 254
)

// requestKey returns key after validating it, or a new random key when key
// is empty.
func requestKey(key string) (string, error) {
	if key == "" {
		return newIdempotencyKey(), nil
	}
	if err := validIdempotencyKey(key); err != nil {
		return "", err
	}
	return key, nil
}

// newIdempotencyKey returns a random key of 128 bits from crypto/rand.
func newIdempotencyKey() string {
	var b [16]byte
	rand.Read(b[:]) // never returns an error (crypto/rand, Go 1.24)
	return "billkit_" + base64.RawURLEncoding.EncodeToString(b[:])
}

// validIdempotencyKey accepts 1 to 255 bytes of printable ASCII without
// spaces.
func validIdempotencyKey(key string) error {
	if key == "" || len(key) > maxIdempotencyKeyLen {
		return fmt.Errorf("%w: idempotency key must be 1 to %d bytes long", ErrInvalidRequest, maxIdempotencyKeyLen)
	}
	for i := 0; i < len(key); i++ {
		if key[i] <= ' ' || key[i] > '~' {
			return fmt.Errorf("%w: idempotency key may hold only printable ASCII characters other than space", ErrInvalidRequest)
		}
	}
	return nil
}

// scopedKey derives the Stripe idempotency key of a client-supplied key:
// Stripe keys are shared by the whole Stripe account, so the client's key is
// bound to the operation and the subject, and two subjects (or the checkout
// and portal endpoints) choosing the same key never share a Stripe key. The
// same (operation, subject, key) always gives the same Stripe key.
func scopedKey(op, subject, clientKey string) string {
	h := sha256.New()
	for _, s := range []string{op, subject, clientKey} {
		fmt.Fprintf(h, "%d:%s;", len(s), s)
	}
	return "billkit_" + op + "_" + base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// validEmail accepts a bare address such as "a@example.com".
func validEmail(email string) error {
	if len(email) > maxEmailLen {
		return fmt.Errorf("%w: email longer than %d bytes", ErrInvalidRequest, maxEmailLen)
	}
	a, err := mail.ParseAddress(email)
	if err != nil || a.Address != email || a.Name != "" {
		return fmt.Errorf("%w: malformed email address", ErrInvalidRequest)
	}
	return nil
}
