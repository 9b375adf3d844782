package app

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// apiKeys authenticates API keys. It keeps only SHA-256 digests of the keys
// and compares a presented key against every one in constant time, so
// neither a key's content nor its position leaks through timing. It is safe
// for concurrent use.
type apiKeys struct {
	entries []apiKeyEntry
}

type apiKeyEntry struct {
	digest  [sha256.Size]byte
	subject string
}

func newAPIKeys(keys map[string]string) *apiKeys {
	a := &apiKeys{}
	for k, s := range keys {
		a.entries = append(a.entries, apiKeyEntry{digest: sha256.Sum256([]byte(k)), subject: s})
	}
	return a
}

// lookup returns the subject of key, or false.
func (a *apiKeys) lookup(key string) (string, bool) {
	d := sha256.Sum256([]byte(key))
	match := -1
	for i := range a.entries {
		if subtle.ConstantTimeCompare(d[:], a.entries[i].digest[:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return "", false
	}
	return a.entries[match].subject, true
}

// bearerToken returns the token of an "Authorization: Bearer <token>"
// header.
func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// authenticate is middleware that admits only requests with a valid API
// key, and puts the key's subject in the request's context. Others get 401.
func (a *apiKeys) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearerToken(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="billkit"`)
			writeProblem(w, http.StatusUnauthorized, "Send your API key as \"Authorization: Bearer <key>\".")
			return
		}
		subject, ok := a.lookup(token)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="billkit", error="invalid_token"`)
			writeProblem(w, http.StatusUnauthorized, "The API key is not valid.")
			return
		}
		next.ServeHTTP(w, r.WithContext(withSubject(r.Context(), subject)))
	})
}

type subjectKey struct{}

// withSubject returns a copy of ctx carrying the authenticated subject.
func withSubject(ctx context.Context, subject string) context.Context {
	return context.WithValue(ctx, subjectKey{}, subject)
}

// subjectFrom returns the authenticated subject in ctx, or "".
func subjectFrom(ctx context.Context) string {
	s, _ := ctx.Value(subjectKey{}).(string)
	return s
}
