// Package claimtoken carries the token of a webhook claim in a context: the
// webhook Handler puts it there for the handlers it runs, and webhooktest
// puts it there for tests of a handler that reads it.
package claimtoken

import "context"

// key is the context key of the claim token.
type key struct{}

// NewContext returns a copy of ctx carrying token.
func NewContext(ctx context.Context, token string) context.Context {
	return context.WithValue(ctx, key{}, token)
}

// FromContext returns the token ctx carries; ok is false when it carries
// none or an empty one.
func FromContext(ctx context.Context) (token string, ok bool) {
	token, ok = ctx.Value(key{}).(string)
	return token, ok && token != ""
}
