//go:build !prevrelease

package bench

// extraContenders returns the contenders that build tags add to
// [Contenders]: none without tags. See prev_contender.go.
func extraContenders() []Contender { return nil }
