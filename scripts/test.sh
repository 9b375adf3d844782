#!/usr/bin/env bash
# Installs what billkit's tests need on a fresh Debian machine, then runs the
# whole suite with the race detector: gofmt, go vet, go test -race (of the
# core module, and of the otel/ module when no packages are named).
#
#   ./scripts/test.sh                 # everything
#   ./scripts/test.sh ./quota/...     # only some packages (still installs)
#   FUZZTIME=1m ./scripts/test.sh     # a longer fuzzing run of the webhook handler
#
# What it installs, only when missing:
#   - redis-server and redis-cli (Debian package redis-server, via apt-get)
#   - stripe-mock v0.162.0 and v0.203.0, each with `go install` into its own
#     directory under $BILLKIT_TOOLS (default ~/.cache/billkit/tools)
#
# Under CI=true a test whose server is missing fails instead of skipping.
set -euo pipefail

cd "$(dirname "$0")/.."

STRIPE_MOCK_VERSIONS=(v0.162.0 v0.203.0)
export BILLKIT_TOOLS="${BILLKIT_TOOLS:-$HOME/.cache/billkit/tools}"

log() { printf '==> %s\n' "$*" >&2; }

as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
		log "need root to run: $*"; return 1
	fi
}

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
	log "installing redis-server (apt-get)"
	as_root apt-get update -qq
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
# The Debian package starts a system redis-server on :6379; the tests never
# use it (each test starts its own on a free loopback port).

for v in "${STRIPE_MOCK_VERSIONS[@]}"; do
	dir="$BILLKIT_TOOLS/stripe-mock@$v"
	if [ ! -x "$dir/stripe-mock" ]; then
		log "installing stripe-mock $v into $dir"
		mkdir -p "$dir"
		GOBIN="$dir" GOFLAGS=-mod=mod go install "github.com/stripe/stripe-mock@$v"
	fi
done

log "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	printf 'gofmt would change:\n%s\n' "$unformatted" >&2
	exit 1
fi

log "go vet"
go vet ./...
if [ -f bench/go.mod ]; then
	(cd bench && go vet ./...)
fi
# The OpenTelemetry adapter and its example (which adds the Prometheus
# client) are modules of their own, which ./... skips: vet them here, and
# test them with everything.
for mod in otel otel/example; do
	[ -f "$mod/go.mod" ] || continue
	(cd "$mod" && go vet ./...)
	if [ $# -eq 0 ]; then
		log "go test -race ./... in $mod/"
		(cd "$mod" && go test -race -count=1 ./...)
	fi
done

pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./...)
log "go test -race ${pkgs[*]}"
go test -race -count=1 -timeout 30m "${pkgs[@]}"

if [ $# -eq 0 ]; then
	# The seed corpora ran above as ordinary tests; a short coverage-guided
	# run on top looks for new inputs (FUZZTIME=0 skips it).
	fuzztime="${FUZZTIME:-10s}"
	if [ "$fuzztime" != 0 ]; then
		log "go test -fuzz FuzzHandler ./webhook/ (${fuzztime})"
		go test -run '^$' -fuzz '^FuzzHandler$' -fuzztime "$fuzztime" ./webhook/
	fi
fi
