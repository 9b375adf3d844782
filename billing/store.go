package billing

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/billkit/billkit/internal/subject"
)

// checkSubject applies billkit's subject rule to a subject a store builds
// a key from.
func checkSubject(s string) error {
	if err := subject.Check(s); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSubject, err)
	}
	return nil
}

// maxUpdateAttempts bounds how often Update re-reads after a concurrent
// change before it gives up with ErrConflict.
const maxUpdateAttempts = 32

// applyUpdate runs fn on a copy of cur (the zero Entitlement with Subject set
// when found is false) and reports the entitlement to store and whether it
// differs from cur. It fixes Subject and sets UpdatedAt to now when changed.
func applyUpdate(subject string, cur Entitlement, found bool, now time.Time, fn func(*Entitlement) error) (next Entitlement, changed bool, err error) {
	if !found {
		cur = Entitlement{Subject: subject}
	}
	next = cur
	if err := fn(&next); err != nil {
		return cur, false, err
	}
	next.Subject = subject
	next.UpdatedAt = cur.UpdatedAt
	if found && sameEntitlement(cur, next) {
		return cur, false, nil
	}
	if !found && sameEntitlement(Entitlement{Subject: subject}, next) {
		return cur, false, nil
	}
	next.UpdatedAt = now.UTC()
	return next, true, nil
}

func sameEntitlement(a, b Entitlement) bool {
	ab, err1 := json.Marshal(a)
	bb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ab, bb)
}

func encodeEntitlement(e Entitlement) ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("billing: encode entitlement: %w", err)
	}
	return b, nil
}

func decodeEntitlement(b []byte) (Entitlement, error) {
	var e Entitlement
	if err := json.Unmarshal(b, &e); err != nil {
		return Entitlement{}, fmt.Errorf("billing: decode entitlement: %w", err)
	}
	return e, nil
}
