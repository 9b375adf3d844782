package quota

// Test seams, exported to the quota_test package only.
var (
	// RedisKey is [RedisStore.key]: the Redis key of a counter.
	RedisKey = (*RedisStore).key
	// MemoryLen is [MemoryStore.counters]: the number of counters held.
	MemoryLen = (*MemoryStore).counters
	// TakeScriptSHA and RefundScriptSHA are the SHA-1s of the take and
	// refund scripts, for hooks that single their calls out.
	TakeScriptSHA   = takeScript.sha.(string)
	SettleScriptSHA = settleScript.sha.(string)
	RefundScriptSHA = refundScript.sha.(string)
	// LeanTakeScriptSHA is the SHA-1 of the take script of a take without
	// ID and holds on a store that resolves lost takes.
	LeanTakeScriptSHA = leanScript.sha.(string)
	// ComboTakeScriptSHA is the SHA-1 of the take script of several such
	// takes on one counter, sent together.
	ComboTakeScriptSHA = comboScript.sha.(string)
	// TakeSource, LeanTakeSource and ComboTakeSource are the take
	// scripts' sources, as EVAL sends them.
	TakeSource      = takeSource
	LeanTakeSource  = leanTakeSource
	ComboTakeSource = comboTakeSource
	// ResolveSource is the script that resolves a lost take without ID.
	ResolveSource = resolveSource
)

// Resolving returns the number of lost decisions s has yet to resolve.
func Resolving(s *RedisStore) int {
	if s.batch == nil {
		return 0
	}
	return s.batch.res.pending()
}

// Pending returns the number of settles and refunds that m has started
// and that have not ended.
func (m *Middleware) Pending() int { return m.bg.pending() }

// QueueLen returns the number of decisions waiting for s's next batch.
func QueueLen(s *RedisStore) int {
	if s.batch == nil {
		return 0
	}
	s.batch.mu.Lock()
	defer s.batch.mu.Unlock()
	return len(s.batch.queue)
}
