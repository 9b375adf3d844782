package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
	stripewebhook "github.com/stripe/stripe-go/v76/webhook"

	"github.com/billkit/billkit/webhook"
	"github.com/billkit/billkit/webhook/webhooktest"
)

// FuzzHandler feeds arbitrary deliveries to the Handler: it must never
// panic, answer only statuses it documents, run a handler only for a body
// signed with the secret within the tolerance, and run it once, answering
// 200, for every such body that is an event with an id and a type.
//
// When sign is true the target signs the body itself, at fuzzNow+skew
// seconds, and appends header's fields to the signature's; otherwise header
// is sent as it is. Signing inside the target lets the fuzzer change a
// signed body and explore what follows verification; a pre-signed seed
// loses its signature with any change.
//
// Why the run keeps executing. The fuzzer keeps an input whose run covers
// code that no earlier run did, then shrinks it, one value at a time, to the
// smallest input that still covers that code: when few bytes can go, that
// takes up to n²/2 runs of an n-byte value, and the worker fuzzes nothing
// meanwhile (reported as 0 execs/s when every worker is shrinking; see
// golang/go#51484). The CI run stalled that way for three reasons, each
// removed here:
//
//   - Long values whose coverage depends on their length (io.ReadAll's
//     buffer growth, per-byte loops) cannot shrink, and a pre-signed body
//     cannot lose a byte at all: a 550-byte body took 150,000 runs, 12 s
//     to a minute. Bodies are now signed in the target, bodies over
//     fuzzMaxBody are answered 413 unread, and headers over fuzzMaxHeader
//     are skipped, so shrinking an input costs at most a few thousand runs.
//   - Work done once per process (encoding/json's type caches, the first
//     read of the random source, pools filled for the first time) showed
//     up as new coverage when a worker first met it on a mutated input,
//     and no later run reproduced it, so every shrinking step failed. Every
//     seed is now delivered once before fuzzing, in each worker.
//   - sync.Pool keeps a cache per P: with several Ps a pooled object (fmt's
//     printers, encoding/json's encoder state) is found on one run and
//     allocated on the next, which again reads as coverage an input does
//     not reproduce. The target runs with one P.
func FuzzHandler(f *testing.F) {
	ev := []byte(`{"id":"evt_1","object":"event","type":"invoice.paid","data":{"object":{"id":"in_1","object":"invoice"}}}`)
	seeds := []fuzzInput{
		{true, 0, "", ev},
		{true, -301, "", ev},
		{true, 301, "", ev},
		{true, -300, "", ev},
		{true, 300, "", ev},
		{true, 0, "v1=00,v0=aa", ev},
		{true, 0, "t=1", ev},
		{true, 0, "", []byte(`{}`)},
		{true, 0, "", []byte(`{"id":"evt_1","type":"invoice.paid","data":null}`)},
		{true, 0, "", []byte(`not json`)},
		{false, 0, webhooktest.Sign("whsec_other", ev, fuzzNow), ev},
		{false, 0, "", ev},
		{false, 0, "t=,v1=", ev},
		{false, 0, "t=1772366400,v1=00", ev},
		{false, 0, "t=1772366400,t=1,v1=zz,v0=aa,,=", []byte{}},
		{false, 0, "t=99999999999999999999999,v1=ab", []byte("{")},
		{true, 0, "", bytes.Repeat([]byte("0"), fuzzMaxBody+1)},
	}

	// One P, and every seed delivered once in each process before fuzzing
	// (this function runs in every worker): see above.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	for _, in := range seeds {
		if err := in.check(); err != nil {
			f.Fatalf("seed (sign %v, skew %d, header %q, body %q): %v", in.sign, in.skew, in.header, in.body, err)
		}
		f.Add(in.sign, in.skew, in.header, in.body)
	}

	f.Fuzz(func(t *testing.T, sign bool, skew int64, header string, body []byte) {
		if len(header) > fuzzMaxHeader {
			t.Skip()
		}
		if err := (fuzzInput{sign, skew, header, body}).check(); err != nil {
			t.Fatal(err)
		}
	})
}

// fuzzInput is one input of [FuzzHandler]. When sign is true the body is
// signed with the secret at fuzzNow+skew seconds, and header's own fields
// follow the signature's.
type fuzzInput struct {
	sign   bool
	skew   int64
	header string
	body   []byte
}

// check delivers in to a fresh Handler and returns an error when the answer
// breaks a property of [FuzzHandler].
func (in fuzzInput) check() error {
	header := in.header
	if in.sign {
		sig := webhooktest.Sign(secret, in.body, time.Unix(fuzzNow.Unix()+in.skew, 0))
		if header != "" {
			sig += "," + header
		}
		header = sig
	}
	code, calls := fuzzDeliver(header, in.body)

	if len(in.body) > fuzzMaxBody {
		if code != http.StatusRequestEntityTooLarge || calls != 0 {
			return fmt.Errorf("%d-byte body: status %d, %d handler calls; want 413 and none", len(in.body), code, calls)
		}
		return nil
	}
	if code != http.StatusOK && code != http.StatusBadRequest {
		return fmt.Errorf("status %d for header %q", code, header)
	}
	signed := stripewebhook.ValidatePayloadIgnoringTolerance(in.body, header, secret) == nil && withinTolerance(header)
	if calls > 0 && (!signed || code != http.StatusOK) {
		return fmt.Errorf("handler ran (status %d) for a body not signed with the secret within the tolerance (header %q)", code, header)
	}
	var event stripe.Event
	if signed && json.Unmarshal(in.body, &event) == nil && event.ID != "" && event.Type != "" && (calls != 1 || code != http.StatusOK) {
		return fmt.Errorf("signed event %q of type %q: status %d, %d handler calls; want 200 and 1 call", event.ID, event.Type, code, calls)
	}
	return nil
}

// Bounds of the fuzz inputs (see FuzzHandler): the Handler's MaxBodyBytes,
// and the longest header fuzzed. Stripe's own header, t= and one v1=, is 81
// bytes, and the target's signature precedes the fuzzed fields.
const (
	fuzzMaxBody   = 128
	fuzzMaxHeader = 128
)

// fuzzNow is the fuzz target's clock.
var fuzzNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fuzzDeliver serves one delivery to a fresh Handler and returns its status
// and the number of handler calls.
func fuzzDeliver(header string, body []byte) (code, calls int) {
	clock := func() time.Time { return fuzzNow }
	h, err := webhook.New(webhook.Config{
		Secrets:      []string{secret},
		Store:        webhook.NewMemoryStore(webhook.MemoryOptions{Now: clock}),
		Now:          clock,
		MaxBodyBytes: fuzzMaxBody,
		Logger:       quiet,
	})
	if err != nil {
		panic(err)
	}
	h.OnAny(func(context.Context, *stripe.Event) error { calls++; return nil })
	// http.NewRequest, not httptest.NewRequest, which parses a request line
	// through a pooled reader (see FuzzHandler on pools).
	r, err := http.NewRequest(http.MethodPost, "/webhook", bytes.NewReader(body))
	if err != nil {
		panic(err)
	}
	r.Header.Set("Stripe-Signature", header)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec.Code, calls
}

// withinTolerance reports whether the header's timestamp (its last t=, as
// stripe-go reads it) is within the default tolerance of fuzzNow.
func withinTolerance(header string) bool {
	var ts int64
	found := false
	for _, pair := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok || k != "t" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return false
		}
		ts, found = n, true
	}
	age := fuzzNow.Unix() - ts
	tol := int64(webhook.DefaultTolerance / time.Second)
	return found && age <= tol && age >= -tol
}
