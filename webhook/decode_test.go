package webhook

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/stripe/stripe-go/v76"
)

// decodeSeeds are events that the fast path must decode as encoding/json
// does, and inputs it must hand over to encoding/json.
var decodeSeeds = []string{
	`{"id":"evt_1","object":"event","type":"invoice.paid","data":{"object":{"id":"in_1","object":"invoice"}}}`,
	`{"id":"evt_1","type":"invoice.paid","data":null}`,
	`{"id":"evt_1","type":"invoice.paid","data":{}}`,
	`{"id":"evt_1","type":"invoice.paid","data":{"object":null}}`,
	`{"id":"evt_1","type":"invoice.paid","data":{"object":"x"}}`,
	`{"id":"evt_1","type":"invoice.paid","data":{"object":{},"previous_attributes":{"a":[1,2.5e3,-0,true,false,null,"s",{}],"b":[]}}}`,
	`{"id":"evt_1","type":"invoice.paid","data":{"object":{"a":1},"object":{"b":2}}}`,
	`{"id":"evt_1","id":"evt_2","type":"t","data":{"object":{}}}`,
	`{"ID":"evt_1","Type":"t","data":{"Object":{}}}`,
	`{"id":"evt_\u0031","type":"t\n","data":{"object":{"k\u00e9":"\ud83d\ude00","\ud800":"\xff"}}}`,
	`{"id":"évt","type":"t","data":{"object":{"é":"ü"}}}`,
	`{"id":"evt_1","type":"t","created":1.5,"data":{"object":{}}}`,
	`{"id":"evt_1","type":"t","created":1e3,"data":{"object":{}}}`,
	`{"id":"evt_1","type":"t","created":-9223372036854775808,"pending_webhooks":9223372036854775808,"data":{"object":{}}}`,
	`{"id":"evt_1","type":"t","created":null,"livemode":null,"account":null,"data":{"object":{"n":1e999}}}`,
	`{"id":"evt_1","type":"t","livemode":true,"request":{"id":null,"idempotency_key":"k"},"data":{"object":{}}}`,
	`{"id":"evt_1","type":"t","request":"req_1","data":{"object":{}}}`,
	`{"id":"evt_1","type":"t","request":null,"extra":{"x":[1,{"y":null}]},"data":{"object":{},"extra":1}}`,
	` { "id" : "evt_1" , "type" : "t" , "data" : { "object" : { "a" : [ 1 , 2 ] } } } `,
	`{"id":"evt_1","type":"t","data":{"object":{"a":01}}}`,
	`{"id":"evt_1","type":"t","data":{"object":{"a":1.}}}`,
	`{"id":"evt_1","type":"t","data":{"object":{"a":"\x01"}}}`,
	`{"id":"evt_1","type":"t","data":{"object":{"a":"\q"}}}`,
	`{"id":"evt_1","type":"t","data":{"object":{}}} x`,
	`{"id":"evt_1","type":"t","data":{"object":{}},}`,
	`{"id":"evt_1","type":"t","data":{"object":{"a":tru}}}`,
	`{"id":"evt_1","type":"t","data":{"object":{"a":[1,]}}}`,
	`{"id":"evt_1","type":"t","data":{"object":{"a":1}}`,
	`{"id":"evt_1","type":"t","data":{"object":{"a":{"a":{"a":{"a":{}}}}}}}`,
	`{"-":"x","LastResponse":{},"id":"e","type":"t","data":{"object":{},"Raw":"x","Object":{}}}`,
	`{"id":"evt_1","type":"t","data":{"object":{}},"ſ":1,"K":2,"created":"5"}`,
	`[]`, `null`, `{}`, `"x"`, ``, `{"id":"e","type":"t","data":{"object":` + strings.Repeat("[", 2000) + strings.Repeat("]", 2000) + `}}`,
}

func checkDecode(t *testing.T, payload []byte) {
	t.Helper()
	want := new(stripe.Event)
	wantErr := json.Unmarshal(payload, want)
	got, err := decodeEvent(payload)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("%q: error %v, encoding/json %v", payload, err, wantErr)
	}
	if err == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%q: decoded\n%#v\n%#v\nencoding/json\n%#v\n%#v", payload, got, got.Data, want, want.Data)
	}
}

func TestDecodeEventMatchesEncodingJSON(t *testing.T) {
	for _, s := range decodeSeeds {
		checkDecode(t, []byte(s))
	}
	obj, err := os.ReadFile("testdata/invoice.json")
	if err != nil {
		t.Fatal(err)
	}
	ev := `{"id":"evt_1","object":"event","api_version":"2023-10-16","created":1767225600,"livemode":false,"pending_webhooks":1,"request":{"id":null,"idempotency_key":null},"type":"invoice.paid","data":{"object":` + string(obj) + `}}`
	checkDecode(t, []byte(ev))
	if _, ok := fastDecodeEvent([]byte(ev)); !ok {
		t.Fatal("a typical event left the fast path")
	}
}

func FuzzDecodeEvent(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		checkDecode(t, payload)
	})
}

// BenchmarkDecodeEvent measures decodeEvent on the typical 3 KB event of
// BenchmarkHandler; BenchmarkDecode measures json.Unmarshal into
// stripe.Event, which it replaces, on the same event.
func BenchmarkDecodeEvent(b *testing.B) {
	obj, err := os.ReadFile("testdata/invoice.json")
	if err != nil {
		b.Fatal(err)
	}
	p := []byte(`{"id":"evt_1","object":"event","api_version":"2023-10-16","created":1767225600,"livemode":false,"pending_webhooks":1,"request":{"id":null,"idempotency_key":null},"type":"invoice.paid","data":{"object":` + string(obj) + `}}`)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeEvent(p); err != nil {
			b.Fatal(err)
		}
	}
}
