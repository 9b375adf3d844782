package bench

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/billkit/billkit/internal/testserver"
	"github.com/redis/go-redis/v9"
)

var correctnessOut = flag.String("correctness.out", "", "also write the correctness tables (markdown) to this file")

// correctLimit is the limit of every limiter in the correctness test.
const correctLimit = 3

// expect is what each limiter is documented (in README.md) to do; the test
// fails when a limiter behaves otherwise, so that the README cannot drift
// from the libraries it describes.
type expect struct {
	denyStatus     int
	deniedCounted  bool
	downStatus     int // 0: no response (connection aborted)
	roundTrips     float64
	singleKey      bool
	recoversStatus int
}

var expectations = map[string]expect{
	"billkit":    {denyStatus: 402, deniedCounted: false, downStatus: 503, roundTrips: 1, singleKey: false, recoversStatus: 204},
	"ulule":      {denyStatus: 429, deniedCounted: true, downStatus: 0, roundTrips: 1, singleKey: true, recoversStatus: 204},
	"redis_rate": {denyStatus: 429, deniedCounted: false, downStatus: 500, roundTrips: 1, singleKey: true, recoversStatus: 204},
	"throttled":  {denyStatus: 429, deniedCounted: false, downStatus: 500, roundTrips: 2, singleKey: true, recoversStatus: 204},
}

// row is what the test observed of one limiter.
type row struct {
	name           string
	denyStatus     int
	deniedCounted  bool
	deniedDetail   string
	keys           []string
	sameSlot       bool
	hashTag        bool
	clusterStatus  int
	commands       string
	roundTrips     float64
	downStatus     int
	downErr        string
	downTime       time.Duration
	recoversStatus int
	allowedHeaders string
	deniedHeaders  string
}

// TestCorrectness observes, for each limiter, on real redis-servers:
// (a) whether denied requests are counted in the stored state, (b) the keys
// one decision writes, whether they share a Cluster slot, and whether the
// limiter works on a 3-master Cluster, with the commands and round trips of
// one steady-state request, (c) what it answers when Redis is down, and
// whether it recovers when Redis returns, (d) the rate-limit header fields
// it sends. It prints the findings as markdown tables.
func TestCorrectness(t *testing.T) {
	cluster := testserver.StartCluster(t)
	crdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs, ContextTimeoutEnabled: true})
	t.Cleanup(func() { crdb.Close() })

	var mu sync.Mutex
	var rows []row
	t.Run("limiter", func(t *testing.T) {
		for _, c := range Contenders() {
			want, ok := expectations[c.Name]
			if !ok {
				continue // the floors are not limiters
			}
			t.Run(c.Name, func(t *testing.T) {
				t.Parallel()
				r := observe(t, c, crdb)
				mu.Lock()
				rows = append(rows, r)
				mu.Unlock()
				check(t, r, want)
			})
		}
	})
	order := make(map[string]int)
	for i, c := range Contenders() {
		order[c.Name] = i
	}
	slices.SortFunc(rows, func(a, b row) int { return order[a.name] - order[b.name] })
	tables := renderTables(rows)
	t.Log("\n" + tables)
	if *correctnessOut != "" {
		if err := os.WriteFile(*correctnessOut, []byte(tables), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func check(t *testing.T, r row, want expect) {
	t.Helper()
	if r.denyStatus != want.denyStatus {
		t.Errorf("deny status = %d, want %d", r.denyStatus, want.denyStatus)
	}
	if r.deniedCounted != want.deniedCounted {
		t.Errorf("denied requests counted = %v (%s), want %v", r.deniedCounted, r.deniedDetail, want.deniedCounted)
	}
	if r.downStatus != want.downStatus {
		t.Errorf("Redis down: status = %d (%s), want %d", r.downStatus, r.downErr, want.downStatus)
	}
	if r.roundTrips != want.roundTrips {
		t.Errorf("round trips per request = %v, want %v", r.roundTrips, want.roundTrips)
	}
	if got := len(r.keys) == 1; got != want.singleKey {
		t.Errorf("keys of one decision = %q, want single key %v", r.keys, want.singleKey)
	}
	if !r.sameSlot {
		t.Errorf("keys %q of one subject are in different Cluster slots", r.keys)
	}
	if r.clusterStatus != http.StatusNoContent {
		t.Errorf("on a Redis Cluster: status %d, want 204", r.clusterStatus)
	}
	if r.recoversStatus != want.recoversStatus {
		t.Errorf("after Redis returned: status %d, want %d", r.recoversStatus, want.recoversStatus)
	}
}

func serve(h http.Handler, subject string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, "/v1/things", nil)
	r.Header.Set(SubjectHeader, subject)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

func observe(t *testing.T, c Contender, crdb *redis.ClusterClient) row {
	ctx := context.Background()
	srv := testserver.StartRedis(t)
	rdb := NewClient(srv.Addr)
	t.Cleanup(func() { rdb.Close() })
	rtt := &testserver.CommandHook{}
	rdb.AddHook(rtt)
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	t.Cleanup(func() { admin.Close() })

	h, err := c.New(rdb, Policy{Limit: correctLimit}, OK)
	if err != nil {
		t.Fatal(err)
	}
	r := row{name: c.Name}
	const subject = "alice"

	// (b) The commands of one steady-state request, between two markers in
	// MONITOR's output; its round trips; the keys it leaves.
	mon := startMonitor(t, srv.Addr)
	if rec := serve(h, subject); rec.Code != http.StatusNoContent {
		t.Fatalf("request 1: status %d", rec.Code)
	}
	admin.Echo(ctx, "mark-1")
	before := rtt.RoundTrips()
	rec := serve(h, subject)
	if rec.Code != http.StatusNoContent {
		t.Fatalf("request 2: status %d", rec.Code)
	}
	r.roundTrips = float64(rtt.RoundTrips() - before)
	admin.Echo(ctx, "mark-2")
	r.commands = mon.between("mark-1", "mark-2")
	r.keys, err = admin.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(r.keys)
	ch, err := c.New(crdb, Policy{Limit: correctLimit}, OK)
	if err != nil {
		t.Fatal(err)
	}
	csub := subject + "-" + c.Name
	r.clusterStatus = serve(ch, csub).Code
	// Whether one subject's keys share a slot is read on the Cluster: a
	// limiter may key differently there (billkit's takes on one server
	// share a record per send of decisions, on a Cluster each has its own
	// in the subject's slot).
	var ckeys []string
	var ckMu sync.Mutex
	err = crdb.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		ks, err := m.Keys(ctx, "*"+csub+"*").Result()
		ckMu.Lock()
		ckeys = append(ckeys, ks...)
		ckMu.Unlock()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	r.sameSlot, r.hashTag = true, true
	var slot0 int64 = -1
	for _, k := range ckeys {
		slot, err := crdb.ClusterKeySlot(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if slot0 >= 0 && slot != slot0 {
			r.sameSlot = false
		}
		slot0 = slot
		if !strings.Contains(k, "{"+csub+"}") {
			r.hashTag = false
		}
	}

	// (d) Header fields of an allowed request (the third: count = limit).
	rec = serve(h, subject)
	if rec.Code != http.StatusNoContent {
		t.Fatalf("request 3: status %d", rec.Code)
	}
	r.allowedHeaders = headerList(rec.Header())

	// (a) Two requests over the limit: does the stored state count them?
	s3 := snapshot(t, admin)
	rec = serve(h, subject)
	r.denyStatus = rec.Code
	r.deniedHeaders = headerList(rec.Header())
	if rec = serve(h, subject); rec.Code != r.denyStatus {
		t.Fatalf("second denied request: status %d, first %d", rec.Code, r.denyStatus)
	}
	s5 := snapshot(t, admin)
	r.deniedCounted, r.deniedDetail = compare(s3, s5)

	// (c) Redis down, through a real server so that a panic shows as the
	// client sees it; then Redis back (empty, without scripts).
	hs := httptest.NewUnstartedServer(h)
	hs.Config.ErrorLog = log.New(io.Discard, "", 0)
	hs.Start()
	t.Cleanup(hs.Close)
	get := func() (int, error) {
		req, _ := http.NewRequest(http.MethodGet, hs.URL+"/v1/things", nil)
		req.Header.Set(SubjectHeader, "bob")
		cl := &http.Client{Timeout: 10 * time.Second}
		resp, err := cl.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	srv.Stop()
	start := time.Now()
	r.downStatus, err = get()
	r.downTime = time.Since(start)
	if err != nil {
		r.downErr = shortErr(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	r.recoversStatus, _ = get()
	return r
}

func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

// headerList renders the response's rate-limit related fields.
func headerList(h http.Header) string {
	var out []string
	for k, v := range h {
		switch k {
		case "Content-Type", "Content-Length", "X-Content-Type-Options", "Cache-Control":
			continue
		}
		out = append(out, k+": "+strings.Join(v, ", "))
	}
	if len(out) == 0 {
		return "none"
	}
	slices.Sort(out)
	return strings.Join(out, "<br>")
}

// snapshot returns every key's value (strings) or fields (hashes), as
// "key" or "key[field]" → value.
func snapshot(t *testing.T, rdb *redis.Client) map[string]string {
	t.Helper()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string)
	for _, k := range keys {
		typ, err := rdb.Type(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		switch typ {
		case "string":
			out[k], err = rdb.Get(ctx, k).Result()
		case "hash":
			var m map[string]string
			m, err = rdb.HGetAll(ctx, k).Result()
			for f, v := range m {
				out[k+"["+f+"]"] = v
			}
		default:
			t.Fatalf("key %s of type %s", k, typ)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// compare reports whether the stored state between a and b (two denied
// requests apart) changed in what the limiter counts: a plain value, or the
// "used" field of billkit's hash; a "denied" field is counted apart.
func compare(a, b map[string]string) (counted bool, detail string) {
	var changes []string
	for k, v := range b {
		if a[k] == v {
			continue
		}
		old := a[k]
		if old == "" {
			old = "absent"
		}
		changes = append(changes, fmt.Sprintf("`%s` %s→%s", k, old, v))
		// billkit's take records (for refunds: a key per take, or one per
		// send of takes) count nothing.
		record := strings.Contains(k, ":take:") || strings.Contains(k, ":batch:")
		if (!strings.HasSuffix(k, "]") && !record) || strings.HasSuffix(k, "[used]") {
			counted = true
		}
	}
	for k, v := range b {
		if a[k] == v && strings.HasSuffix(k, "[used]") {
			changes = append(changes, fmt.Sprintf("`%s` stays %s", k, v))
		}
	}
	slices.Sort(changes)
	if len(changes) == 0 {
		return false, "stored state unchanged by denials"
	}
	return counted, strings.Join(changes, ", ")
}

// monitor reads a redis-server's MONITOR stream.
type monitor struct {
	mu    sync.Mutex
	lines []string
}

func startMonitor(t *testing.T, addr string) *monitor {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, "MONITOR\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	if l, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(l, "+OK") {
		t.Fatalf("MONITOR: %q, %v", l, err)
	}
	m := &monitor{}
	go func() {
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			m.mu.Lock()
			m.lines = append(m.lines, strings.TrimRight(l, "\r\n"))
			m.mu.Unlock()
		}
	}()
	return m
}

// between returns the commands seen between the ECHO commands of the two
// markers, waiting for the second to arrive: top-level commands in order,
// each followed by the commands its Lua script ran, in parentheses.
func (m *monitor) between(from, to string) string {
	deadline := time.Now().Add(5 * time.Second)
	for {
		m.mu.Lock()
		lines := slices.Clone(m.lines)
		m.mu.Unlock()
		i := slices.IndexFunc(lines, func(l string) bool { return strings.Contains(l, `"`+from+`"`) })
		j := slices.IndexFunc(lines, func(l string) bool { return strings.Contains(l, `"`+to+`"`) })
		if i >= 0 && j > i {
			return renderCommands(lines[i+1 : j])
		}
		if time.Now().After(deadline) {
			return "(MONITOR markers not seen)"
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// renderCommands turns MONITOR lines such as
// +1700000000.1 [0 127.0.0.1:5000] "evalsha" "…" and +… [0 lua] "HGET" "k"
// into "EVALSHA (HGET, HINCRBY)".
func renderCommands(lines []string) string {
	var out []string
	var inner []string
	flush := func() {
		if len(inner) > 0 && len(out) > 0 {
			out[len(out)-1] += " (" + strings.Join(inner, ", ") + ")"
		}
		inner = nil
	}
	for _, l := range lines {
		open := strings.Index(l, "[")
		end := strings.Index(l, "]")
		if open < 0 || end < open {
			continue
		}
		rest := strings.TrimSpace(l[end+1:])
		cmd, _, _ := strings.Cut(rest, " ")
		cmd = strings.ToUpper(strings.Trim(cmd, `"`))
		if strings.Contains(l[open:end], "lua") {
			inner = append(inner, cmd)
			continue
		}
		flush()
		out = append(out, cmd)
	}
	flush()
	return strings.Join(out, ", ")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// renderTables renders the findings as two markdown tables.
func renderTables(rows []row) string {
	var b strings.Builder
	b.WriteString("| limiter | over the limit | (a) denied requests counted? | (b) keys of one decision | same Cluster slot | works on a 3-master Cluster | commands of one request (Lua calls in parentheses) | round trips | (c) Redis down | Redis back |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		down := fmt.Sprintf("%d", r.downStatus)
		if r.downStatus == 0 {
			down = "no response (" + r.downErr + ")"
		}
		down += fmt.Sprintf(" after %s", r.downTime.Round(time.Millisecond))
		keys := make([]string, len(r.keys))
		for i, k := range r.keys {
			keys[i] = "`" + k + "`"
		}
		slot := yesNo(r.sameSlot)
		if len(r.keys) == 1 {
			slot += " (one key"
			if r.hashTag {
				slot += ", subject in a hash tag"
			}
			slot += ")"
		}
		fmt.Fprintf(&b, "| %s | %d | %s: %s | %s | %s | %s | %s | %g | %s | %d |\n",
			r.name, r.denyStatus, yesNo(r.deniedCounted), r.deniedDetail, strings.Join(keys, ", "), slot,
			yesNo(r.clusterStatus == http.StatusNoContent), r.commands, r.roundTrips, down, r.recoversStatus)
	}
	b.WriteString("\n| limiter | (d) header fields, allowed | (d) header fields, denied |\n|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", r.name, r.allowedHeaders, r.deniedHeaders)
	}
	return b.String()
}
