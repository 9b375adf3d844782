package quota

// Test seams, exported to the quota_test package only.
var (
	// RedisKey is [RedisStore.key]: the Redis key of a counter.
	RedisKey = (*RedisStore).key
	// MemoryLen is [MemoryStore.counters]: the number of counters held.
	MemoryLen = (*MemoryStore).counters
)
