package webhook

// Test seams, for the webhook_test package only.

// Key returns the key that holds eventID's record.
func (s *RedisStore) Key(eventID string) string { return s.key(eventID) }

// Len returns the number of records alive now, after removing the expired
// ones.
func (s *MemoryStore) Len() int { return s.size() }
