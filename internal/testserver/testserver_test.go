package testserver_test

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/billkit/billkit/internal/testserver"
	"github.com/redis/go-redis/v9"
)

func TestRedisStopStart(t *testing.T) {
	r := testserver.StartRedis(t)
	c := r.Client(t)
	ctx := context.Background()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("ping: %v", err)
	}
	r.Stop()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("ping succeeded on a stopped server")
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("ping after restart: %v", err)
	}
}

func TestCluster(t *testing.T) {
	cl := testserver.StartCluster(t)
	c := cl.Client(t)
	ctx := context.Background()
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		if err := c.Set(ctx, k, 1, 0).Err(); err != nil {
			t.Fatalf("set %s: %v", k, err)
		}
	}
	var n atomic.Int32
	err := c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		n.Add(1)
		return nil
	})
	if err != nil || n.Load() != 3 {
		t.Fatalf("masters = %d, err %v; want 3", n.Load(), err)
	}
}

func TestStripeMock(t *testing.T) {
	for _, v := range []string{testserver.StripeMockUsageRecords, testserver.StripeMockMeterEvents} {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			// Two of the same version at once: neither listener may clash.
			for _, s := range []*testserver.StripeMock{testserver.StartStripeMock(t, v), testserver.StartStripeMock(t, v)} {
				req, _ := http.NewRequest("GET", s.URL+"/v1/customers", nil)
				req.Header.Set("Authorization", "Bearer sk_test_123")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
}

// TestMissingServer checks the rule that keeps CI honest: a server that is
// not installed skips a test locally but fails it under CI=true. It runs
// itself in a child process, once in each mode.
func TestMissingServer(t *testing.T) {
	if os.Getenv("TESTSERVER_CHILD") == "1" {
		testserver.StartStripeMock(t, "v0.0.0-not-installed")
		t.Fatal("StartStripeMock returned for a version that is not installed")
	}
	for _, tc := range []struct {
		ci       string
		wantFail bool
		want     string
	}{
		{ci: "", wantFail: false, want: "--- SKIP: TestMissingServer"},
		{ci: "true", wantFail: true, want: "CI=true, so this is a failure, not a skip"},
	} {
		t.Run("CI="+tc.ci, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestMissingServer$", "-test.v")
			// Later entries win over the inherited CI and BILLKIT_TOOLS.
			cmd.Env = append(os.Environ(), "TESTSERVER_CHILD=1", "CI="+tc.ci, "BILLKIT_TOOLS="+t.TempDir())
			out, err := cmd.CombinedOutput()
			if failed := err != nil; failed != tc.wantFail {
				t.Fatalf("child failed = %v, want %v; output:\n%s", failed, tc.wantFail, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("child output lacks %q:\n%s", tc.want, out)
			}
		})
	}
}
