// Package testserver starts real servers for billkit's tests: a standalone
// redis-server, a three-master Redis Cluster, and stripe-mock. Every server
// listens on a loopback address only, belongs to one test, and is stopped
// (and its files removed) when that test ends.
//
// A test whose server binary is missing is skipped with a message saying how
// to install it, unless the environment variable CI is "true": there the same
// absence fails the test, so a misconfigured CI can never pass by skipping.
//
// Binaries are found as follows:
//
//   - redis-server and redis-cli: $REDIS_SERVER / $REDIS_CLI, else $PATH.
//   - stripe-mock: $STRIPE_MOCK_V0_162_0 (for version "v0.162.0") and so on,
//     else $BILLKIT_TOOLS/stripe-mock@VERSION/stripe-mock, where BILLKIT_TOOLS
//     defaults to $HOME/.cache/billkit/tools (the directory scripts/test.sh
//     installs into).
package testserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Stripe-mock versions the test suite uses.
const (
	// StripeMockUsageRecords is the last line of stripe-mock whose API still
	// has subscription-item usage records (and checkout, billing portal).
	StripeMockUsageRecords = "v0.162.0"
	// StripeMockMeterEvents has billing meter events but no usage records.
	StripeMockMeterEvents = "v0.203.0"
)

const startTimeout = 15 * time.Second

// InCI reports whether the tests run under CI (CI=true), where a missing
// server fails a test instead of skipping it.
func InCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v == "true" || v == "1"
}

// missing skips tb, or fails it under CI, because a server is not installed.
func missing(tb testing.TB, what, hint string) {
	tb.Helper()
	if InCI() {
		tb.Fatalf("testserver: %s is not installed (CI=true, so this is a failure, not a skip): %s", what, hint)
	}
	tb.Skipf("testserver: %s is not installed; %s (or run ./scripts/test.sh)", what, hint)
}

func lookBin(env, name string) string {
	if p := os.Getenv(env); p != "" {
		return p
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return ""
	}
	return p
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("testserver: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// freeClusterPort returns a port p such that p and p+10000 (the cluster bus)
// are both free.
func freeClusterPort(tb testing.TB) int {
	tb.Helper()
	for i := 0; i < 100; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("testserver: free port: %v", err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		if p+10000 > 65535 {
			l.Close()
			continue
		}
		bus, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+10000))
		l.Close()
		if err != nil {
			continue
		}
		bus.Close()
		return p
	}
	tb.Fatalf("testserver: no free port pair for a cluster node")
	return 0
}

func waitTCP(addr string, deadline time.Time) error {
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not accept connections within %v: %w", addr, startTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// process is a server started by this package.
type process struct {
	mu   sync.Mutex
	name string
	args []string
	dir  string
	addr string
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan struct{}
}

func (p *process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return nil
	}
	cmd := exec.Command(p.name, p.args...)
	cmd.Dir = p.dir
	out := &LockedBuffer{}
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	if err := waitTCP(p.addr, time.Now().Add(startTimeout)); err != nil {
		cmd.Process.Kill()
		<-done
		return fmt.Errorf("%w; output:\n%s", err, out.String())
	}
	p.cmd, p.done = cmd, done
	return nil
}

func (p *process) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd = nil
}

// LockedBuffer is a bytes.Buffer safe for concurrent use: a log
// destination that a test reads while goroutines write to it.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written so far.
func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Redis is a redis-server started for one test. Its methods are safe for
// concurrent use.
type Redis struct {
	// Addr is the server's host:port on 127.0.0.1.
	Addr string
	p    *process
}

// StartRedis starts a redis-server on a free loopback port, with persistence
// off and maxmemory-policy noeviction, and stops it when tb ends.
func StartRedis(tb testing.TB, extraArgs ...string) *Redis {
	tb.Helper()
	bin := lookBin("REDIS_SERVER", "redis-server")
	if bin == "" {
		missing(tb, "redis-server", "install it with `apt-get install -y redis-server`")
	}
	port := FreePort(tb)
	r := &Redis{Addr: "127.0.0.1:" + strconv.Itoa(port)}
	args := append([]string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no",
		"--maxmemory-policy", "noeviction",
		"--protected-mode", "yes",
	}, extraArgs...)
	r.p = &process{name: bin, args: args, dir: tb.TempDir(), addr: r.Addr}
	if err := r.p.start(); err != nil {
		tb.Fatalf("testserver: start redis-server: %v", err)
	}
	tb.Cleanup(r.p.stop)
	return r
}

// Stop stops the server (its data is lost). It is a no-op when stopped.
func (r *Redis) Stop() { r.p.stop() }

// Client returns a go-redis client on the server, with
// ContextTimeoutEnabled (which billkit's stores want), closed when tb ends.
func (r *Redis) Client(tb testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: r.Addr, ContextTimeoutEnabled: true})
	tb.Cleanup(func() { c.Close() })
	return c
}

// Start starts a stopped server again on the same address, empty.
func (r *Redis) Start() error { return r.p.start() }

// Cluster is a Redis Cluster of three masters on loopback ports, started for
// one test.
type Cluster struct {
	// Addrs are the masters' host:port addresses.
	Addrs []string
	nodes []*process
}

// StartCluster starts three redis-server nodes in cluster mode, joins them
// with `redis-cli --cluster create`, waits until every node reports
// cluster_state:ok, and stops them when tb ends.
func StartCluster(tb testing.TB) *Cluster {
	tb.Helper()
	bin := lookBin("REDIS_SERVER", "redis-server")
	cli := lookBin("REDIS_CLI", "redis-cli")
	if bin == "" || cli == "" {
		missing(tb, "redis-server/redis-cli", "install them with `apt-get install -y redis-server`")
	}
	c := &Cluster{}
	for i := 0; i < 3; i++ {
		port := freeClusterPort(tb)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		p := &process{name: bin, dir: tb.TempDir(), addr: addr, args: []string{
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "2000",
			"--save", "", "--appendonly", "no",
			"--maxmemory-policy", "noeviction",
		}}
		if err := p.start(); err != nil {
			tb.Fatalf("testserver: start cluster node: %v", err)
		}
		tb.Cleanup(p.stop)
		c.nodes = append(c.nodes, p)
		c.Addrs = append(c.Addrs, addr)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		tb.Fatalf("testserver: redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(startTimeout)
	for _, addr := range c.Addrs {
		host, port, _ := net.SplitHostPort(addr)
		for {
			out, err := exec.CommandContext(ctx, cli, "-h", host, "-p", port, "cluster", "info").CombinedOutput()
			if err == nil && bytes.Contains(out, []byte("cluster_state:ok")) {
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("testserver: cluster node %s not ready: %v\n%s", addr, err, out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c
}

// Client returns a go-redis Cluster client on the cluster, with
// ContextTimeoutEnabled, closed when tb ends.
func (c *Cluster) Client(tb testing.TB) *redis.ClusterClient {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs, ContextTimeoutEnabled: true})
	tb.Cleanup(func() { cc.Close() })
	return cc
}

// Stop stops every node of the cluster.
func (c *Cluster) Stop() {
	for _, n := range c.nodes {
		n.stop()
	}
}

// StripeMock is a stripe-mock server started for one test.
type StripeMock struct {
	// URL is the server's base URL, for example http://127.0.0.1:41234,
	// suitable as a stripe-go backend URL.
	URL string
	// Version is the stripe-mock version that runs.
	Version string
	p       *process
}

// StripeMockBinary returns the path of the stripe-mock binary of version
// (such as "v0.162.0"), or "" when it is not installed.
func StripeMockBinary(version string) string {
	env := "STRIPE_MOCK_" + strings.ToUpper(strings.NewReplacer(".", "_").Replace(version))
	if p := os.Getenv(env); p != "" {
		return p
	}
	tools := os.Getenv("BILLKIT_TOOLS")
	if tools == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return ""
		}
		tools = filepath.Join(home, ".cache", "billkit", "tools")
	}
	p := filepath.Join(tools, "stripe-mock@"+version, "stripe-mock")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// StartStripeMock starts stripe-mock of the given version (for example
// [StripeMockUsageRecords]) on a free loopback port, and stops it when tb
// ends. Its HTTPS listener, which it opens as well, also gets a free loopback
// port, so that several stripe-mocks can run at once.
func StartStripeMock(tb testing.TB, version string) *StripeMock {
	tb.Helper()
	bin := StripeMockBinary(version)
	if bin == "" {
		missing(tb, "stripe-mock "+version, fmt.Sprintf(
			"install it with `GOBIN=$HOME/.cache/billkit/tools/stripe-mock@%[1]s go install github.com/stripe/stripe-mock@%[1]s`", version))
	}
	port := FreePort(tb)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	s := &StripeMock{URL: "http://" + addr, Version: version}
	s.p = &process{name: bin, dir: tb.TempDir(), addr: addr, args: []string{"-http-addr", addr, "-https-addr", "127.0.0.1:"}}
	if err := s.p.start(); err != nil {
		tb.Fatalf("testserver: start stripe-mock %s: %v", version, err)
	}
	tb.Cleanup(s.p.stop)
	// An open port is not yet a serving stripe-mock: wait until it answers.
	for deadline := time.Now().Add(10 * time.Second); ; {
		req, _ := http.NewRequest(http.MethodGet, s.URL+"/v1/customers", nil)
		req.Header.Set("Authorization", "Bearer sk_test_billkit")
		resp, err := freshClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("testserver: stripe-mock %s does not answer: %v", version, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

// freshClient opens a new connection for every request, so that no request
// meets a kept-alive connection to a server that has stopped (test servers
// come and go on reused ports).
var freshClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// Get GETs path from the stripe-mock at baseURL with a test key and returns
// the body, failing tb unless the answer is 200.
func Get(tb testing.TB, baseURL, path string) []byte {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+path, nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer sk_test_billkit")
	resp, err := freshClient.Do(req)
	if err != nil {
		tb.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET %s: %d %v: %s", path, resp.StatusCode, err, b)
	}
	return b
}

// Object GETs path from the stripe-mock at baseURL and decodes the object.
func Object(tb testing.TB, baseURL, path string) map[string]any {
	tb.Helper()
	var o map[string]any
	if err := json.Unmarshal(Get(tb, baseURL, path), &o); err != nil {
		tb.Fatalf("GET %s: %v", path, err)
	}
	return o
}
