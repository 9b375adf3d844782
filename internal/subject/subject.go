// Package subject holds the one rule for subjects (the application's
// account IDs) that every billkit package enforces before it builds a Redis
// key or a Stripe parameter from one: quota's counters, billing's
// entitlements, watermarks and leases, and checkout's client_reference_id
// and metadata.
package subject

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// MaxLen is the longest subject, in bytes: Stripe's limit on a Checkout
// Session's client_reference_id, where checkout sends the subject.
const MaxLen = 200

// Errors of [Check]; callers wrap them in their own package's sentinel.
var (
	errEmpty   = errors.New("empty subject")
	errTooLong = fmt.Errorf("subject longer than %d bytes", MaxLen)
	errChars   = errors.New("subject holds '{', '}', a control character or invalid UTF-8")
)

// Check reports whether s is a valid subject: 1 to MaxLen bytes of valid
// UTF-8 with no '{' or '}' (they delimit a Redis Cluster hash tag) and no
// control character. The error never contains s.
func Check(s string) error {
	switch {
	case s == "":
		return errEmpty
	case len(s) > MaxLen:
		return errTooLong
	case !utf8.ValidString(s):
		return errChars
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '{' || c == '}' || c < 0x20 || c == 0x7f {
			return errChars
		}
	}
	return nil
}
