package main

import (
	"encoding/json"
	"net/http"

	"github.com/billkit/billkit/internal/problem"
)

// writeProblem writes an application/problem+json response whose title is
// status's text.
func writeProblem(w http.ResponseWriter, status int, detail string) {
	problem.Write(w, status, problem.New(status, detail))
}

// writeJSON writes v as an application/json response.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
