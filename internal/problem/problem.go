// Package problem writes the application/problem+json responses (RFC 9457)
// of billkit's HTTP handlers, so that every package answers bad input and
// failures with the same body shape and header fields.
package problem

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
)

// ContentType is the media type of a problem details body.
const ContentType = "application/problem+json"

// Details is an RFC 9457 problem details object. A handler whose problems
// carry more members embeds it in its own struct.
type Details struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// New returns the problem of type "about:blank" whose title is status's
// text and whose detail is detail, a fixed sentence safe to show a client.
func New(status int, detail string) Details {
	return Details{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail}
}

// Write answers with status and body, a [Details] or a struct embedding
// one, encoded as JSON without HTML escaping. It sets Content-Type to
// [ContentType], Cache-Control to no-store, X-Content-Type-Options to
// nosniff and Content-Length. A body that cannot be encoded (which a
// struct of strings and numbers never is) gives a bare 500 problem.
func Write(w http.ResponseWriter, status int, body any) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(body); err != nil {
		b.Reset()
		status = http.StatusInternalServerError
		_ = json.NewEncoder(&b).Encode(New(status, ""))
	}
	h := w.Header()
	h["Content-Type"] = []string{ContentType}
	h["Cache-Control"] = []string{"no-store"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	h["Content-Length"] = []string{strconv.Itoa(b.Len())}
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}
