package billing

import "time"

// defaultGracePeriod is how long the default grace policy keeps a past_due
// subject's access: KeepAccess(7 days).
const defaultGracePeriod = 7 * 24 * time.Hour

// Grace is what a past_due subject keeps: the limits of Tier until Until.
// The zero Grace suspends at once.
type Grace struct {
	// Until is when the grace access ends.
	Until time.Time
	// Tier is the tier whose limits apply until then.
	Tier string
}

// GracePolicy decides what a subject keeps while its subscription is
// past_due. since is when the payment first failed (the failed invoice's
// finalization). It must be a pure function: the lifecycle calls it every
// time it derives a past_due entitlement.
type GracePolicy func(e Entitlement, since time.Time) Grace

// KeepAccess keeps the subject's own plan for d after the payment failed,
// then suspends it. KeepAccess(7 * 24 * time.Hour) is the default policy.
func KeepAccess(d time.Duration) GracePolicy {
	return func(e Entitlement, since time.Time) Grace { return Grace{Until: since.Add(d), Tier: e.Tier} }
}

// DowngradeTo gives the subject tier's limits for d after the payment
// failed, then suspends it.
func DowngradeTo(tier string, d time.Duration) GracePolicy {
	return func(_ Entitlement, since time.Time) Grace { return Grace{Until: since.Add(d), Tier: tier} }
}

// Suspend denies a past_due subject at once.
func Suspend() GracePolicy {
	return func(Entitlement, time.Time) Grace { return Grace{} }
}
