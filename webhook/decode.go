package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf8"

	"github.com/stripe/stripe-go/v76"
)

// decodeEvent decodes payload into a stripe.Event exactly as
// json.Unmarshal(payload, ev) does, but in one pass.
//
// stripe-go's EventData.UnmarshalJSON parses data a second time and then
// data.object a third time (into Data.Object), each json.Unmarshal
// validating its input first: a 3 KB event was scanned five times. The fast
// path here reads the payload once, building Data.Object and
// Data.PreviousAttributes with the types encoding/json gives them
// (map[string]any, []any, float64, string, bool, nil) and Data.Raw from the
// same bytes. It takes only the shape Stripe sends: any input it does not
// recognise as plainly well-formed (invalid JSON, a field of an unexpected
// type, a repeated field, a key that matches a field only case-insensitively,
// a number out of range, data without object) is decoded by encoding/json
// instead, so the result and every error are encoding/json's.
func decodeEvent(payload []byte) (*stripe.Event, error) {
	if ev, ok := fastDecodeEvent(payload); ok {
		return ev, nil
	}
	ev := new(stripe.Event)
	if err := json.Unmarshal(payload, ev); err != nil {
		return nil, err
	}
	return ev, nil
}

// errSlow makes the fast path give way to encoding/json.
var errSlow = errors.New("webhook: not on the fast path")

type eventParser struct {
	b     []byte
	i     int
	depth int
}

// maxDepth bounds the nesting the fast path follows; deeper input is left
// to encoding/json (which has its own limit).
const maxDepth = 1000

func fastDecodeEvent(payload []byte) (*stripe.Event, bool) {
	p := &eventParser{b: payload}
	ev := new(stripe.Event)
	if err := p.event(ev); err != nil {
		return nil, false
	}
	p.ws()
	if p.i != len(p.b) {
		return nil, false
	}
	return ev, true
}

func (p *eventParser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// peek returns the next non-space byte, or 0 at the end.
func (p *eventParser) peek() byte {
	p.ws()
	if p.i >= len(p.b) {
		return 0
	}
	return p.b[p.i]
}

func (p *eventParser) expect(c byte) error {
	if p.peek() != c {
		return errSlow
	}
	p.i++
	return nil
}

// object calls field for each key of an object, positioned at its value.
func (p *eventParser) object(field func(key []byte, raw bool) error) error {
	if err := p.expect('{'); err != nil {
		return err
	}
	if p.peek() == '}' {
		p.i++
		return nil
	}
	for {
		if p.peek() != '"' {
			return errSlow
		}
		start := p.i
		if err := p.skipString(); err != nil {
			return err
		}
		lit := p.b[start:p.i]
		// raw tells whether the literal is its own content: no escape and
		// only ASCII, so it can be compared to a field name as it is.
		raw := true
		for _, c := range lit[1 : len(lit)-1] {
			if c == '\\' || c >= utf8.RuneSelf {
				raw = false
				break
			}
		}
		if err := p.expect(':'); err != nil {
			return err
		}
		p.ws()
		if err := field(lit, raw); err != nil {
			return err
		}
		switch p.peek() {
		case ',':
			p.i++
		case '}':
			p.i++
			return nil
		default:
			return errSlow
		}
	}
}

// skipString moves past a string literal, checking only what the scanner
// needs to find its end; its content is checked when it is decoded.
func (p *eventParser) skipString() error {
	j := p.i + 1
	for j < len(p.b) {
		c := p.b[j]
		switch {
		case c == '"':
			p.i = j + 1
			return nil
		case c == '\\':
			j += 2
		case c < 0x20:
			return errSlow
		default:
			j++
		}
	}
	return errSlow
}

// str decodes a string literal.
func (p *eventParser) str() (string, error) {
	if p.peek() != '"' {
		return "", errSlow
	}
	start := p.i
	if err := p.skipString(); err != nil {
		return "", err
	}
	return decodeString(p.b[start:p.i])
}

// decodeString decodes a string literal that skipString delimited.
func decodeString(lit []byte) (string, error) {
	body := lit[1 : len(lit)-1]
	ascii := true
	for _, c := range body {
		if c == '\\' {
			return slowString(lit)
		}
		if c >= utf8.RuneSelf {
			ascii = false
		}
	}
	if !ascii && !utf8.Valid(body) {
		return slowString(lit)
	}
	return string(body), nil
}

// slowString decodes a literal with escapes or invalid UTF-8 the way
// encoding/json does (it also validates the escapes).
func slowString(lit []byte) (string, error) {
	var s string
	if err := json.Unmarshal(lit, &s); err != nil {
		return "", errSlow
	}
	return s, nil
}

// number moves past a number literal, checked against JSON's grammar, and
// returns it.
func (p *eventParser) number() ([]byte, error) {
	b, i := p.b, p.i
	start := i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return nil, errSlow
	}
	if i < len(b) && b[i] == '.' {
		i++
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			return nil, errSlow
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			return nil, errSlow
		}
	}
	p.i = i
	return b[start:i], nil
}

// literal moves past true, false or null.
func (p *eventParser) literal(word string) bool {
	if len(p.b)-p.i >= len(word) && string(p.b[p.i:p.i+len(word)]) == word {
		p.i += len(word)
		return true
	}
	return false
}

// value decodes any JSON value into the types encoding/json uses for an
// interface{}.
func (p *eventParser) value() (any, error) {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > maxDepth {
		return nil, errSlow
	}
	switch p.peek() {
	case '{':
		m := make(map[string]any)
		err := p.object(func(key []byte, raw bool) error {
			k, err := decodeString(key)
			if err != nil {
				return err
			}
			v, err := p.value()
			if err != nil {
				return err
			}
			m[k] = v
			return nil
		})
		if err != nil {
			return nil, err
		}
		return m, nil
	case '[':
		p.i++
		a := make([]any, 0)
		if p.peek() == ']' {
			p.i++
			return a, nil
		}
		for {
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			a = append(a, v)
			switch p.peek() {
			case ',':
				p.i++
			case ']':
				p.i++
				return a, nil
			default:
				return nil, errSlow
			}
		}
	case '"':
		return p.str()
	case 't':
		if p.literal("true") {
			return true, nil
		}
	case 'f':
		if p.literal("false") {
			return false, nil
		}
	case 'n':
		if p.literal("null") {
			return nil, nil
		}
	default:
		n, err := p.number()
		if err != nil {
			return nil, err
		}
		f, err := strconv.ParseFloat(string(n), 64)
		if err != nil {
			return nil, errSlow
		}
		return f, nil
	}
	return nil, errSlow
}

// stringField decodes a string or null (which leaves *dst as it is).
func (p *eventParser) stringField(dst *string) error {
	if p.peek() == 'n' && p.literal("null") {
		return nil
	}
	s, err := p.str()
	*dst = s
	return err
}

// intField decodes an integer literal or null, as encoding/json does for an
// int64 (a fraction or an exponent is an error there: slow path).
func (p *eventParser) intField(dst *int64) error {
	if p.peek() == 'n' && p.literal("null") {
		return nil
	}
	lit, err := p.number()
	if err != nil {
		return err
	}
	n, err := strconv.ParseInt(string(lit), 10, 64)
	if err != nil {
		return errSlow
	}
	*dst = n
	return nil
}

// mapField decodes an object or null into a map[string]any field that is
// nil.
func (p *eventParser) mapField(dst *map[string]any) error {
	switch p.peek() {
	case 'n':
		if p.literal("null") {
			return nil
		}
	case '{':
		v, err := p.value()
		if err != nil {
			return err
		}
		*dst = v.(map[string]any)
		return nil
	}
	return errSlow
}

// fieldIndex returns the index of key in names, or -1 when no name matches;
// a key that matches a name only case-insensitively (encoding/json would
// take it) or that is not plain ASCII without escapes leaves the fast path.
func fieldIndex(key []byte, raw bool, names []string) (int, error) {
	body := key[1 : len(key)-1]
	if !raw {
		return -1, errSlow
	}
	for i, n := range names {
		if string(body) == n {
			return i, nil
		}
	}
	for _, n := range names {
		if bytes.EqualFold(body, []byte(n)) {
			return -1, errSlow
		}
	}
	return -1, nil
}

var (
	eventFields   = []string{"account", "api_version", "created", "data", "id", "livemode", "object", "pending_webhooks", "request", "type"}
	dataFields    = []string{"previous_attributes", "object"}
	requestFields = []string{"id", "idempotency_key"}
)

// event decodes the envelope; every field may appear once.
func (p *eventParser) event(ev *stripe.Event) error {
	var seen uint32
	return p.object(func(key []byte, raw bool) error {
		f, err := fieldIndex(key, raw, eventFields)
		if err != nil {
			return err
		}
		if f < 0 {
			_, err := p.value()
			return err
		}
		if seen&(1<<f) != 0 {
			return errSlow
		}
		seen |= 1 << f
		switch f {
		case 0:
			return p.stringField(&ev.Account)
		case 1:
			return p.stringField(&ev.APIVersion)
		case 2:
			return p.intField(&ev.Created)
		case 3:
			return p.data(ev)
		case 4:
			return p.stringField(&ev.ID)
		case 5:
			switch {
			case p.peek() == 't' && p.literal("true"):
				ev.Livemode = true
			case p.peek() == 'f' && p.literal("false"):
				ev.Livemode = false
			case p.peek() == 'n' && p.literal("null"):
			default:
				return errSlow
			}
			return nil
		case 6:
			return p.stringField(&ev.Object)
		case 7:
			return p.intField(&ev.PendingWebhooks)
		case 8:
			return p.request(ev)
		default:
			var t string
			err := p.stringField(&t)
			ev.Type = stripe.EventType(t)
			return err
		}
	})
}

// data decodes data as stripe-go's EventData.UnmarshalJSON does: null leaves
// it nil; an object must hold object, itself an object or null.
func (p *eventParser) data(ev *stripe.Event) error {
	if p.peek() == 'n' && p.literal("null") {
		return nil
	}
	d := new(stripe.EventData)
	var seen uint32
	err := p.object(func(key []byte, raw bool) error {
		f, err := fieldIndex(key, raw, dataFields)
		if err != nil {
			return err
		}
		if f < 0 {
			_, err := p.value()
			return err
		}
		if seen&(1<<f) != 0 {
			return errSlow
		}
		seen |= 1 << f
		if f == 0 {
			return p.mapField(&d.PreviousAttributes)
		}
		start := p.i
		if err := p.mapField(&d.Object); err != nil {
			return err
		}
		d.Raw = json.RawMessage(bytes.Clone(p.b[start:p.i]))
		return nil
	})
	if err != nil {
		return err
	}
	if seen&2 == 0 {
		return errSlow // encoding/json fails on the missing object
	}
	ev.Data = d
	return nil
}

// request decodes request: null leaves it nil.
func (p *eventParser) request(ev *stripe.Event) error {
	if p.peek() == 'n' && p.literal("null") {
		return nil
	}
	r := new(stripe.EventRequest)
	var seen uint32
	err := p.object(func(key []byte, raw bool) error {
		f, err := fieldIndex(key, raw, requestFields)
		if err != nil {
			return err
		}
		if f < 0 {
			_, err := p.value()
			return err
		}
		if seen&(1<<f) != 0 {
			return errSlow
		}
		seen |= 1 << f
		if f == 0 {
			return p.stringField(&r.ID)
		}
		return p.stringField(&r.IdempotencyKey)
	})
	if err != nil {
		return err
	}
	ev.Request = r
	return nil
}
