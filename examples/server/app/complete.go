package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"strings"

	"github.com/billkit/billkit/quota"
)

// Limits of POST /v1/complete's request.
const (
	// maxCompleteBody bounds the request body.
	maxCompleteBody = 64 << 10
	// defaultMaxTokens is max_tokens when the request does not set it.
	defaultMaxTokens = 256
	// maxMaxTokens is the largest max_tokens accepted, so that one
	// request cannot reserve a period's allowance.
	maxMaxTokens = 4096
	// demoModel names the demo's model in its replies.
	demoModel = "billkit-demo-1"
)

// completionRequest is the body of POST /v1/complete.
type completionRequest struct {
	// Prompt is the text to complete. Required.
	Prompt string `json:"prompt"`
	// MaxTokens bounds the reply's tokens: 1 to maxMaxTokens,
	// defaultMaxTokens when absent.
	MaxTokens *int64 `json:"max_tokens"`
}

// completion is a validated completion request, in the request's context
// from decodeCompletion on.
type completion struct {
	prompt       []string // the prompt's tokens
	maxTokens    int64
	promptTokens int64
}

// estimate is the most tokens the completion can use: its prompt and a
// reply of maxTokens. Reserving it means that a settle never exceeds its
// reservation, so the token meter's hard limit holds exactly.
func (c *completion) estimate() int64 { return c.promptTokens + c.maxTokens }

type completionKey struct{}

// completionFrom returns the completion that decodeCompletion put in ctx.
func completionFrom(ctx context.Context) (*completion, bool) {
	c, ok := ctx.Value(completionKey{}).(*completion)
	return c, ok
}

// decodeCompletion reads and validates the JSON body of POST /v1/complete
// (at most maxCompleteBody bytes) and passes the request on with the
// completion in its context. An invalid body gets 400 (413 when too large)
// as problem+json before the quota middleware, so that it is not counted.
func decodeCompletion(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body completionRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxCompleteBody))
		dec.DisallowUnknownFields()
		err := dec.Decode(&body)
		if err == nil {
			// Nothing may follow the object.
			if err = dec.Decode(&struct{}{}); err == io.EOF {
				err = nil
			} else if err == nil {
				err = errors.New("more than one JSON value")
			}
		}
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			writeProblem(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("The body is larger than %d bytes.", maxCompleteBody))
			return
		}
		if err != nil {
			writeProblem(w, http.StatusBadRequest, `The body must be one JSON object: {"prompt": "...", "max_tokens": 256}.`)
			return
		}
		c := &completion{prompt: strings.Fields(body.Prompt), maxTokens: defaultMaxTokens}
		c.promptTokens = int64(len(c.prompt))
		if c.promptTokens == 0 {
			writeProblem(w, http.StatusBadRequest, "prompt is required.")
			return
		}
		if body.MaxTokens != nil {
			if c.maxTokens = *body.MaxTokens; c.maxTokens < 1 || c.maxTokens > maxMaxTokens {
				writeProblem(w, http.StatusBadRequest, fmt.Sprintf("max_tokens must be from 1 to %d.", maxMaxTokens))
				return
			}
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), completionKey{}, c)))
	})
}

// estimateTokens is the token meter's quota.Reservation Estimate: the
// completion's estimate.
func estimateTokens(r *http.Request) (int64, error) {
	c, ok := completionFrom(r.Context())
	if !ok {
		return 0, errors.New("no completion in the request's context (decodeCompletion must come first)")
	}
	return c.estimate(), nil
}

// completionResponse is the body of a completion.
type completionResponse struct {
	Model string `json:"model"`
	Reply string `json:"reply"`
	// FinishReason is "stop" when the reply is complete, "length" when
	// max_tokens cut it.
	FinishReason string          `json:"finish_reason"`
	Usage        completionUsage `json:"usage"`
}

// completionUsage is what a completion used; the token meter counts
// TotalTokens.
type completionUsage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

// complete serves POST /v1/complete, the demo's model: it "generates" a
// reply and settles the tokens it used on the token meter, whose quota
// middleware reserved the completion's estimate before it ran. What it
// settles (usually less than the estimate) is what is counted and billed;
// the rest of the reservation is released.
func (a *App) complete(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	c, _ := completionFrom(ctx) // decodeCompletion is in front
	reply, finish := generate(c.prompt, c.maxTokens)
	u := completionUsage{PromptTokens: c.promptTokens, CompletionTokens: int64(len(reply))}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	if err := quota.Settle(ctx, tokensMeter, u.TotalTokens); err != nil {
		// A bug of the wiring: the reservation is then settled as
		// estimated.
		a.log.ErrorContext(ctx, "complete: settle tokens", "subject", subjectFrom(ctx), "err", err)
	}
	writeJSON(w, http.StatusOK, completionResponse{
		Model:        demoModel,
		Reply:        strings.Join(reply, " "),
		FinishReason: finish,
		Usage:        u,
	})
}

// vocabulary is the demo model's words.
var vocabulary = strings.Fields(`
	the invoice meter counts every token once and only once while the
	plan allows it so a customer pays for what was used and nothing that
	was refused stripe reports usage at the end of each period`)

// generate is the demo model: its reply to prompt, a token (word) per
// element, and why it ended. The reply is deterministic: eight tokens per
// token of the prompt, drawn from vocabulary by a hash of the prompt, cut
// at maxTokens ("length"; else "stop"). A real model's token count is
// likewise known only once it has answered.
func generate(prompt []string, maxTokens int64) (reply []string, finish string) {
	n, finish := 8*int64(len(prompt)), "stop"
	if n > maxTokens {
		n, finish = maxTokens, "length"
	}
	h := fnv.New64a()
	for _, w := range prompt {
		h.Write([]byte(w))
		h.Write([]byte{0})
	}
	x := h.Sum64()
	reply = make([]string, n)
	for i := range reply {
		x ^= x << 13 // xorshift64
		x ^= x >> 7
		x ^= x << 17
		reply[i] = vocabulary[x%uint64(len(vocabulary))]
	}
	return reply, finish
}
