#!/usr/bin/env bash
# Runs the whole peer comparison in one go, on one redis-server per
# benchmark repetition, and writes the results into README.md between the
# "results" markers:
#
#   ./run.sh                                # COUNT=6 BENCHTIME=1s
#   COUNT=10 BENCHTIME=2000x CPU=1,2 ./run.sh
#
# Environment:
#   COUNT      repetitions of every benchmark (go test -count), default 6
#   BENCHTIME  go test -benchtime, default 1s
#   CPU        go test -cpu list (GOMAXPROCS values), default: the machine's
#   BENCH      benchmark pattern, default BenchmarkLimiter
#   OUT        directory for the raw outputs, default ./results
#   BENCHSTAT  benchstat to `go run`, default a pinned golang.org/x/perf
#   README     file to update, default ./README.md; README=- updates nothing
#
# Needs redis-server and redis-cli (apt-get install redis-server) and the Go
# module proxy (for the peers and benchstat).
set -euo pipefail

cd "$(dirname "$0")"

COUNT="${COUNT:-6}"
BENCHTIME="${BENCHTIME:-1s}"
CPU="${CPU:-}"
BENCH="${BENCH:-BenchmarkLimiter}"
OUT="${OUT:-results}"
BENCHSTAT="${BENCHSTAT:-golang.org/x/perf/cmd/benchstat@v0.0.0-20250813145418-2f7363a06fe1}"
README="${README:-README.md}"

log() { printf '==> %s\n' "$*" >&2; }

mkdir -p "$OUT"
# COUNT separate runs of -count 1 rather than one -count COUNT: each run
# measures every contender once, so a change of the machine's load during
# the comparison spreads over all contenders instead of hitting one.
cmd=(go test -run '^$' -bench "$BENCH" -count 1 -benchtime "$BENCHTIME" -timeout 60m)
[ -n "$CPU" ] && cmd+=(-cpu "$CPU")
cmd+=(.)

: >"$OUT/bench.txt"
for i in $(seq "$COUNT"); do
	log "run $i/$COUNT: ${cmd[*]}"
	"${cmd[@]}" | tee -a "$OUT/bench.txt"
done

log "correctness"
go test -run '^TestCorrectness$' -count=1 . -args -correctness.out "$OUT/correctness.md" >"$OUT/correctness.log" 2>&1 ||
	{ cat "$OUT/correctness.log" >&2; exit 1; }

log "benchstat"
go run "$BENCHSTAT" -col /impl "$OUT/bench.txt" >"$OUT/benchstat.txt"
cat "$OUT/benchstat.txt"

log "ratios"
go run ./cmd/ratio "$OUT/bench.txt" >"$OUT/ratio.md"
cat "$OUT/ratio.md"

{
	echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
	echo "- nproc: $(nproc)"
	echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
	echo "- memory: $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
	echo "- $(go version)"
	echo "- $(redis-server --version | cut -d' ' -f1-3)"
	echo "- go-redis $(go list -m -f '{{.Version}}' github.com/redis/go-redis/v9), billkit at $(git -C .. rev-parse --short HEAD 2>/dev/null || echo unknown)"
	echo "- load average before the run's end: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.md"

if [ "$README" != "-" ] && [ -f "$README" ]; then
	log "updating $README"
	gen="$OUT/readme-results.md"
	{
		echo "<!-- results:begin (written by run.sh; do not edit by hand) -->"
		echo
		echo "Command: \`COUNT=$COUNT BENCHTIME=$BENCHTIME${CPU:+ CPU=$CPU} ./run.sh\`, which runs $COUNT times \`$(printf '%q ' "${cmd[@]}" | sed 's/ $//')\`"
		echo
		echo "Machine:"
		echo
		cat "$OUT/machine.md"
		echo
		echo "### Ratios (one run)"
		echo
		cat "$OUT/ratio.md"
		echo
		echo "### benchstat"
		echo
		echo '```'
		cat "$OUT/benchstat.txt"
		echo '```'
		echo
		echo "### Correctness"
		echo
		cat "$OUT/correctness.md"
		echo
		echo "<!-- results:end -->"
	} >"$gen"
	awk -v gen="$gen" '
		/<!-- results:begin/ { while ((getline l < gen) > 0) print l; skip = 1; next }
		/<!-- results:end/ { skip = 0; next }
		!skip { print }
	' "$README" >"$README.tmp"
	mv "$README.tmp" "$README"
fi
log "done: raw outputs in $OUT/"
