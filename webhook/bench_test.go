package webhook_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
	stripewebhook "github.com/stripe/stripe-go/v76/webhook"

	"github.com/billkit/billkit/webhook"
	"github.com/billkit/billkit/webhook/webhooktest"
)

// benchInvoice is a typical event: invoice.paid whose object is stripe-mock
// v0.162.0's invoice (testdata/invoice.json), about 3.1 KB in all.
func benchInvoice(b *testing.B, id string) []byte {
	b.Helper()
	obj, err := os.ReadFile("testdata/invoice.json")
	if err != nil {
		b.Fatal(err)
	}
	return webhooktest.NewEvent(stripe.EventTypeInvoicePaid, json.RawMessage(obj),
		webhooktest.WithID(id), webhooktest.WithCreated(time.Unix(1767225600, 0)))
}

// signedDelivery is a pre-signed request body and header.
type signedDelivery struct {
	body   []byte
	header http.Header
}

// deliveries returns n signed deliveries of distinct events (or of one
// event when distinct is false), all the same size.
func deliveries(b *testing.B, n int, distinct bool) []signedDelivery {
	b.Helper()
	const placeholder = "evt_PLACEHOLDER_00000000000000"
	tmpl := benchInvoice(b, placeholder)
	run := rand.Text()[:12]
	now := time.Now()
	out := make([]signedDelivery, n)
	for i := range out {
		k := i
		if !distinct {
			k = 0
		}
		id := fmt.Sprintf("evt_%s_%014d", run, k)
		p := bytes.Replace(tmpl, []byte(placeholder), []byte(id), 1)
		h := http.Header{}
		h.Set("Stripe-Signature", webhooktest.Sign(secret, p, now))
		h.Set("Content-Type", "application/json; charset=utf-8")
		out[i] = signedDelivery{p, h}
	}
	return out
}

// discardWriter is a ResponseWriter that keeps only the status.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(s int)           { w.status = s }

func (d signedDelivery) serve(b *testing.B, h http.Handler, w *discardWriter) {
	r := &http.Request{
		Method:        http.MethodPost,
		Header:        d.header,
		Body:          io.NopCloser(bytes.NewReader(d.body)),
		ContentLength: int64(len(d.body)),
	}
	r = r.WithContext(context.Background())
	clear(w.h)
	w.status = 0
	h.ServeHTTP(w, r)
	if w.status != http.StatusOK {
		b.Fatalf("status %d", w.status)
	}
}

// benchHandler measures verified, deduplicated events per second through the
// Handler: every delivery is a new event (claim, handler, complete), or with
// duplicates every delivery finds the event done. The deliveries are signed
// before the timer starts.
func benchHandler(b *testing.B, store webhook.Store, duplicates, parallel bool) {
	h := newHandler(b, webhook.Config{Store: store})
	h.On(stripe.EventTypeInvoicePaid, func(context.Context, *stripe.Event) error { return nil })
	ds := deliveries(b, b.N, !duplicates)
	if duplicates {
		// Handled once; every timed delivery is a duplicate.
		ds[0].serve(b, h, &discardWriter{h: http.Header{}})
	}
	b.SetBytes(int64(len(ds[0].body)))
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	if parallel {
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			w := &discardWriter{h: http.Header{}}
			for pb.Next() {
				ds[next.Add(1)-1].serve(b, h, w)
			}
		})
	} else {
		w := &discardWriter{h: http.Header{}}
		for i := range b.N {
			ds[i].serve(b, h, w)
		}
	}
	if cpu := processCPU() - cpu0; cpu > 0 {
		// This process only: a Redis store's server-side time is not in it.
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkHandler(b *testing.B) {
	b.Run("store=memory", func(b *testing.B) { benchHandler(b, webhook.NewMemoryStore(webhook.MemoryOptions{}), false, false) })
	b.Run("store=memory/duplicate", func(b *testing.B) { benchHandler(b, webhook.NewMemoryStore(webhook.MemoryOptions{}), true, false) })
	rdb := realRedis(b)
	b.Run("store=redis", func(b *testing.B) { benchHandler(b, newRedisStore(b, rdb, ""), false, false) })
	b.Run("store=redis/duplicate", func(b *testing.B) { benchHandler(b, newRedisStore(b, rdb, ""), true, false) })
	b.Run("store=redis/parallel", func(b *testing.B) { benchHandler(b, newRedisStore(b, rdb, ""), false, true) })
}

// BenchmarkVerify isolates signature checking: stripe-go's
// ValidatePayloadWithTolerance on the same 3 KB event.
func BenchmarkVerify(b *testing.B) {
	d := deliveries(b, 1, true)[0]
	header := d.header.Get("Stripe-Signature")
	b.SetBytes(int64(len(d.body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := stripewebhook.ValidatePayloadWithTolerance(d.body, header, secret, webhook.DefaultTolerance); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecode isolates stripe-go's JSON decoding (which the Handler no
// longer uses; see BenchmarkDecodeEvent): json.Unmarshal of the same event
// into stripe.Event (which also decodes data.object into a map).
func BenchmarkDecode(b *testing.B) {
	p := deliveries(b, 1, true)[0].body
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		var ev stripe.Event
		if err := json.Unmarshal(p, &ev); err != nil {
			b.Fatal(err)
		}
	}
}
