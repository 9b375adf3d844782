package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/billkit/billkit/examples/server/internal/demo"
	"github.com/billkit/billkit/webhook/webhooktest"
)

// goTool returns the go command that runs this test.
func goTool(t *testing.T) string {
	t.Helper()
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	p, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	return p
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// binaryServer is the real server binary, started for one test.
type binaryServer struct {
	URL, APIKey, WebhookSecret string
	cmd                        *exec.Cmd
	stderr                     *syncBuffer
	exited                     chan struct{} // closed when the process has exited
	waitErr                    error         // cmd.Wait's result, set before exited is closed
}

// startBinary builds the server and starts it with an empty environment but
// PATH, HOME and ADDR. The build uses the test binary's own mode (-race or
// not), so every dependency is already in the build cache and only the
// server's package is compiled and linked.
func startBinary(t *testing.T) *binaryServer {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "server")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.CommandContext(ctx, goTool(t), append(args, ".")...)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	cmd := exec.Command(bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "ADDR=127.0.0.1:0"}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &binaryServer{cmd: cmd, stderr: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = s.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// stdout is read to its end before Wait (as exec.Cmd.StdoutPipe
	// requires), so no line is lost when the process exits early.
	lines := make(chan string)
	stopReading := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-stopReading:
			}
		}
		io.Copy(io.Discard, stdout)
		close(lines)
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	// Whatever happens in the test, the process is killed and reaped.
	t.Cleanup(func() {
		close(stopReading)
		select {
		case <-s.exited:
		default:
			cmd.Process.Kill()
			<-s.exited
		}
		if t.Failed() {
			t.Logf("server stderr:\n%s", s.stderr.String())
		}
	})

	timeout := time.After(time.Minute)
	for s.URL == "" {
		select {
		case line, ok := <-lines:
			if !ok {
				<-s.exited
				t.Fatalf("server exited before listening: %v", s.waitErr)
			}
			if v, ok := strings.CutPrefix(line, "webhook secret: "); ok {
				s.WebhookSecret = v
			} else if v, ok := strings.CutPrefix(line, "demo api key: "); ok {
				s.APIKey = v
			} else if v, ok := strings.CutPrefix(line, "listening on "); ok {
				s.URL = "http://" + v
			}
		case <-timeout:
			t.Fatal("server did not print its listen address within a minute")
		}
	}
	go func() { // the rest of stdout
		for range lines {
		}
	}()
	if s.APIKey == "" || !strings.HasPrefix(s.WebhookSecret, "whsec_") {
		t.Fatalf("server did not print a demo api key and a webhook secret before listening: %q %q", s.APIKey, s.WebhookSecret)
	}
	return s
}

// stop sends SIGTERM and waits for the process to exit.
func (s *binaryServer) stop(t *testing.T) error {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.exited:
		return s.waitErr
	case <-time.After(30 * time.Second):
		t.Fatal("server did not exit within 30s of SIGTERM")
		return nil
	}
}

func do(t *testing.T, method, url string, body []byte, header map[string]string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestBinary(t *testing.T) {
	t.Parallel()
	s := startBinary(t)

	if code, body := do(t, "GET", s.URL+"/healthz", nil, nil); code != http.StatusOK {
		t.Errorf("GET /healthz = %d %s, want 200", code, body)
	}
	code, body := do(t, "GET", s.URL+"/v1/hello", nil, map[string]string{"Authorization": "Bearer " + s.APIKey})
	if code != http.StatusPaymentRequired {
		t.Errorf("GET /v1/hello with the printed key = %d %s, want 402 (authenticated, no plan)", code, body)
	}
	code, body = do(t, "GET", s.URL+"/v1/hello", nil, map[string]string{"Authorization": "Bearer " + s.APIKey + "x"})
	if code != http.StatusUnauthorized {
		t.Errorf("GET /v1/hello with a wrong key = %d %s, want 401", code, body)
	}
	if code, _ := do(t, "GET", s.URL+"/v1/hello", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("GET /v1/hello without a key = %d, want 401", code)
	}

	// An event signed with the printed secret is accepted; one signed with
	// another secret is rejected.
	now := time.Now()
	typ, obj, err := demo.Event(demo.CheckoutCompleted, demo.Subscription{Subject: "demo", Tier: "pro", PriceID: demo.PricePro}, now)
	if err != nil {
		t.Fatal(err)
	}
	payload := webhooktest.NewEvent(typ, obj, webhooktest.WithCreated(now))
	for _, tc := range []struct {
		secret string
		want   int
	}{
		{"whsec_another_secret", http.StatusBadRequest},
		{s.WebhookSecret, http.StatusOK},
	} {
		code, body := do(t, "POST", s.URL+"/billing/webhook", payload, map[string]string{
			"Content-Type":              "application/json",
			webhooktest.SignatureHeader: webhooktest.Sign(tc.secret, payload, now),
		})
		if code != tc.want {
			t.Errorf("event signed with the %s secret = %d %s, want %d", map[bool]string{true: "printed", false: "other"}[tc.secret == s.WebhookSecret], code, body, tc.want)
		}
	}
	// The event took effect: the checkout is pending payment.
	code, body = do(t, "GET", s.URL+"/billing/usage", nil, map[string]string{"Authorization": "Bearer " + s.APIKey})
	if code != http.StatusOK || !strings.Contains(string(body), `"status": "pending"`) {
		t.Errorf("GET /billing/usage after checkout-completed = %d %s, want status pending", code, body)
	}
	// Without Stripe configured, checkout says how to configure it.
	code, body = do(t, "POST", s.URL+"/billing/checkout", []byte(`{"tier":"pro"}`), map[string]string{
		"Authorization": "Bearer " + s.APIKey, "Content-Type": "application/json"})
	if code != http.StatusServiceUnavailable || !strings.Contains(string(body), "STRIPE_SECRET_KEY") {
		t.Errorf("POST /billing/checkout without Stripe = %d %s, want 503 naming STRIPE_SECRET_KEY", code, body)
	}

	if err := s.stop(t); err != nil {
		t.Fatalf("server exited with %v after SIGTERM, want a clean exit", err)
	}
	// Logs go to stderr as JSON lines when stderr is not a terminal.
	logs := strings.TrimSpace(s.stderr.String())
	if logs == "" {
		t.Fatal("no logs on stderr")
	}
	for _, line := range strings.Split(logs, "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("stderr line is not JSON: %q", line)
		}
	}
	if !strings.Contains(logs, `"msg":"stopped"`) {
		t.Errorf("no clean-stop record in the logs")
	}
}
