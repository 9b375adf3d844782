package webhook

import (
	"net/http"

	"github.com/billkit/billkit/internal/problem"
)

// writeProblem answers with status and an application/problem+json body.
// detail must be a fixed, caller-safe sentence.
func writeProblem(w http.ResponseWriter, status int, detail string) {
	problem.Write(w, status, problem.New(status, detail))
}
