package webhooktest

import (
	"context"

	"github.com/billkit/billkit/webhook/internal/claimtoken"
)

// ContextWithToken returns a copy of ctx carrying a claim token, as the
// [github.com/billkit/billkit/webhook.Handler] passes to the handlers it
// runs, so that a test can call a handler that reads
// [github.com/billkit/billkit/webhook.TokenFromContext] directly.
func ContextWithToken(ctx context.Context, token string) context.Context {
	return claimtoken.NewContext(ctx, token)
}
