package subject

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		s  string
		ok bool
	}{
		{"alice", true},
		{"org_42/user-7@example.com", true},
		{"zoë", true},
		{strings.Repeat("a", MaxLen), true},
		{"", false},
		{strings.Repeat("a", MaxLen+1), false},
		{"a{b", false},
		{"a}b", false},
		{"a\nb", false},
		{"a\x00b", false},
		{"a\x7fb", false},
		{"\xff", false},
	} {
		err := Check(tc.s)
		if (err == nil) != tc.ok {
			t.Errorf("Check(%q) = %v, want ok=%v", tc.s, err, tc.ok)
		}
		if err != nil && tc.s != "" && strings.Contains(err.Error(), tc.s) {
			t.Errorf("Check(%q) error echoes the subject: %v", tc.s, err)
		}
	}
}
