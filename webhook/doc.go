// Package webhook receives Stripe webhooks: it verifies each delivery's
// signature, decodes the event, makes sure each event ID takes effect once
// however often and in whatever order Stripe delivers it, and dispatches it
// to the handlers registered for its type.
//
//	store, err := webhook.NewRedisStore(rdb, webhook.RedisOptions{}) // rdb: a redis.UniversalClient
//	if err != nil { ... }
//	h, err := webhook.New(webhook.Config{
//		Secrets: []string{os.Getenv("STRIPE_WEBHOOK_SECRET")},
//		Store:   store,
//	})
//	if err != nil { ... } // errors.Is(err, webhook.ErrInvalidConfig), naming the field
//	h.On(stripe.EventTypeCustomerSubscriptionUpdated, func(ctx context.Context, ev *stripe.Event) error {
//		var sub stripe.Subscription
//		if err := json.Unmarshal(ev.Data.Raw, &sub); err != nil {
//			return err
//		}
//		return apply(ctx, &sub)
//	})
//	mux.Handle("POST /billing/webhook", h)
//
// A handler is an [EventFunc]: it receives the verified event and returns
// nil to acknowledge it or an error to have Stripe deliver it again.
// Configuration mistakes (no secret, no store, a negative duration, a
// retention shorter than Stripe's retry window, a lease no longer than the
// handler timeout) are reported by [New] and [NewRedisStore] as
// [ErrInvalidConfig], wrapped with the field at fault.
//
// # Verification
//
// The Stripe-Signature header is checked with stripe-go's webhook package
// (HMAC-SHA256, constant-time comparison) against every secret in
// Config.Secrets, so a secret can be rolled by listing both the new and the
// old one until the old one expires. A signature whose timestamp is older
// than Config.Tolerance (default 5 minutes) is rejected as a replay, and so
// is one more than Config.Tolerance ahead of Config.Now: stripe-go checks
// only the age, which would accept a payload signed for a future time (a
// leaked secret, a test fixture) again and again until then. Stripe signs
// at the moment it sends, so the symmetric window differs from stripe-go's
// only when the clocks are more than Tolerance apart.
// Bodies are read through [net/http.MaxBytesReader] with a limit of
// Config.MaxBodyBytes (default 1 MiB; Stripe publishes no maximum and
// events are typically a few kilobytes).
//
// # API versions
//
// An event is rendered in the API version of the endpoint that receives it,
// which need not be the version stripe-go v76 is pinned to
// ([stripe.APIVersion]). By default such events are accepted (stripe-go's
// IgnoreAPIVersionMismatch behaviour): the Stripe CLI and many accounts send
// other versions, and an endpoint that fails every delivery is eventually
// disabled by Stripe. event.APIVersion stays visible to handlers, which can
// decode event.Data.Raw into stripe-go's types or read only the fields they
// need. Config.StrictAPIVersion rejects mismatched events with 400 instead:
// safer decoding, at the price of failing deliveries until the endpoint's
// version is aligned with stripe-go's.
//
// # Exactly once
//
// Each verified event is claimed in a [Store] before its handlers run:
//
//   - claimed: the handlers run in order, under a context with a deadline of
//     Config.HandlerTimeout (shorter than the lease). When all succeed the
//     claim is completed, the record is kept for Config.Retention (default
//     7 days, at least 72 hours: longer than Stripe's 3-day retry window)
//     and the answer is 200. When one fails (or panics) the claim is
//     released and the answer is 500, so Stripe's retry runs the handlers
//     again.
//   - done: a duplicate; the answer is 200 and no handler runs.
//   - in flight: another delivery holds the lease; the answer is 409 and
//     Stripe delivers again later.
//
// A claim is a lease (Config.Lease, default 1 minute): a holder that
// crashes never completes nor releases, and the next delivery after the
// lease claims the event again. A lease must outlive the handlers; the
// handler context's deadline enforces that for handlers that honour their
// context. Claims are fenced by a token, so a holder whose lease expired and
// was taken over cannot complete or release the new holder's claim.
//
// Two cases stay at least once, and are logged: handlers that outlive the
// lease (they ignored their context's deadline) may run beside the delivery
// that took the event over; and when the store fails to record completion,
// the effect is applied and the answer is 200, but the claim merely expires,
// so a later copy of the same event would run the handlers again.
//
// Events with no registered handler (and no [Handler.OnAny]) are answered
// 200 without touching the store: Stripe disables endpoints that keep
// failing, so unknown types must be acknowledged.
//
// Events of a handled type that are not meant for this application (a
// subscription of another product on the same Stripe account, an object
// without the metadata this application sets, a connected account's event
// in event.Account) are acknowledged by the handler itself: it returns nil
// without acting, and the event is answered 200 and recorded done like any
// other. An error would fail every delivery of an event that can never
// succeed, for three days.
//
// Exactly once holds for the set of handlers of an event that succeeds. A
// run that fails after some handler already made its change is run again
// whole, so each handler's effect must be idempotent (an upsert, a
// conditional update) or live in the same transaction as the claim, as
// below.
//
// # Stores
//
// [RedisStore] keeps one key per event, PREFIX:wh:{EVENT_ID}
// (RedisOptions.Prefix, default [DefaultPrefix], "billkit"), always with an
// expiry, through Lua scripts on that one key (Cluster-safe).
// [MemoryStore] keeps records in process memory and sweeps expired ones;
// MemoryOptions.Now sets its clock. Both pass the conformance suite
// [github.com/billkit/billkit/webhook/webhooktest.TestStore], which your
// own Store should pass too.
//
// # A Store in your SQL database
//
// When the handlers' effect lives in a SQL database, the strongest guarantee
// comes from recording the event in the same database, and marking it done
// in the same transaction as the business change: then either both happen
// or neither does. A table:
//
//	CREATE TABLE stripe_events (
//		event_id    text        PRIMARY KEY,
//		token       text        NOT NULL, -- the token of the claim that holds or completed it
//		state       text        NOT NULL, -- 'claimed' or 'done'
//		expires_at  timestamptz NOT NULL  -- lease end while claimed, retention end once done
//	);
//	CREATE INDEX ON stripe_events (expires_at); -- for the periodic purge
//
// Claim is one statement that inserts a lease, or takes over an expired
// record, and otherwise reports what it found ($3 is the lease in
// milliseconds, lease.Milliseconds()):
//
//	INSERT INTO stripe_events (event_id, token, state, expires_at)
//	VALUES ($1, $2, 'claimed', now() + $3 * interval '1 millisecond')
//	ON CONFLICT (event_id) DO UPDATE
//	   SET token = EXCLUDED.token, state = 'claimed', expires_at = EXCLUDED.expires_at
//	 WHERE stripe_events.expires_at <= now()
//	RETURNING token;
//	-- a row returned: Claimed with token $2; no row: SELECT state, and
//	-- answer Done for 'done', InFlight for 'claimed' and also when the
//	-- row is gone (released in between: Stripe retries).
//
// Complete and Release are fenced by the token ($3 is the retention in
// milliseconds):
//
//	-- Complete
//	UPDATE stripe_events SET state = 'done', expires_at = now() + $3 * interval '1 millisecond'
//	 WHERE event_id = $1 AND token = $2;
//	-- Release
//	DELETE FROM stripe_events WHERE event_id = $1 AND token = $2 AND state = 'claimed';
//	-- zero rows affected: return webhook.ErrLeaseLost
//
// and a periodic job deletes rows whose expires_at has passed
// (DELETE FROM stripe_events WHERE expires_at < now()), which bounds the
// table as Redis's expiry bounds its keys.
//
// To put the business change in the same transaction, the handler marks
// the event done itself. [TokenFromContext] gives it the token of the claim
// it runs under; it locks the claim's row with SELECT ... FOR UPDATE (a
// concurrent takeover by Claim's upsert then waits for the transaction),
// checks that its lease still holds, applies the change and marks the event
// done, then commits:
//
//	h.On(stripe.EventTypeInvoicePaid, func(ctx context.Context, ev *stripe.Event) error {
//		token, _ := webhook.TokenFromContext(ctx)
//		tx, err := db.BeginTx(ctx, nil)
//		if err != nil {
//			return err
//		}
//		defer tx.Rollback()
//		var held bool
//		err = tx.QueryRowContext(ctx, `SELECT expires_at > now() FROM stripe_events
//			WHERE event_id = $1 AND token = $2 AND state = 'claimed' FOR UPDATE`, ev.ID, token).Scan(&held)
//		if errors.Is(err, sql.ErrNoRows) || (err == nil && !held) {
//			return webhook.ErrLeaseLost // taken over: the new holder applies it
//		} else if err != nil {
//			return err
//		}
//		if err := markPaid(ctx, tx, ev); err != nil { // the business change
//			return err
//		}
//		if _, err := tx.ExecContext(ctx, `UPDATE stripe_events
//			SET state = 'done', expires_at = now() + interval '7 days' WHERE event_id = $1 AND token = $2`, ev.ID, token); err != nil {
//			return err
//		}
//		return tx.Commit()
//	})
//
// For this the table keeps the token once done (Complete then sets only
// state and expires_at, WHERE event_id = $1 AND token = $2, and succeeds
// when the handler already marked the row done). A crash before the commit
// leaves the claim to expire and the event to be retried; a crash after it
// leaves the event done. Register one such handler per event type (or mark
// the event done in the last one): a later handler's failure cannot undo a
// committed transaction.
//
// # Responses and logs
//
// Every rejection is an application/problem+json body (RFC 9457: type,
// title, status, detail) with a fixed sentence as detail; no handler error,
// store error, secret or payload is ever echoed. Config.Logger
// ([log/slog.Default] by default) receives the event id, type and outcome
// of each delivery and handler and store errors, never secrets, signatures
// or payloads.
//
// # Observing
//
// [Config.Observer] receives every delivery's [Delivery]: its [Outcome]
// (handled, duplicate, ignored, in_flight, handler_failed, store_failed,
// bad_signature, stale, malformed, too_large, bad_method), status, event
// type and duration. Its Start func may return a context (a tracing
// span's) under which the event's handlers then run. The module
// github.com/billkit/billkit/otel turns both into OpenTelemetry metrics
// and spans.
//
// # Testing
//
// Package [github.com/billkit/billkit/webhook/webhooktest] builds
// Stripe-shaped events, signs them, and delivers them to a Handler with
// duplicates, concurrency and shuffled order; its ContextWithToken supplies
// a claim token to a handler that reads [TokenFromContext], tested on its
// own.
package webhook
