#!/usr/bin/env bash
# test.sh is the project's test command: it installs the real programs the
# tests drive (Debian packages, when missing), then checks formatting, runs
# go vet and runs every test with the race detector. Works from any directory.
#
#   scripts/test.sh
#
# Tests that need a program that could not be installed fail under CI=true and
# skip with a message otherwise; that is the tests' decision, not this script's.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
command -v go >/dev/null 2>&1 || PATH=$PATH:/usr/local/go/bin
# Root's tools (nginx) live in /usr/sbin, which a non-root PATH may lack.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/sbin ;; esac
export PATH

# Programs the tests run for real, as PROGRAM:PACKAGE[,PACKAGE...].
# gcc: -race needs cgo.
needs=(
	nginx:nginx-light,nginx
	gcc:gcc
	slowhttptest:slowhttptest
	# The ACME test CA and its DNS server (one Debian package holds both).
	pebble:pebble
	pebble-challtestsrv:pebble
)

results=()
failed=0
record() { # record NAME STATUS [DETAIL]
	results+=("$(printf '  %-10s %-5s %s' "$1" "$2" "${3:-}")")
	[ "$2" != FAIL ] || failed=1
}
section() { printf '\n== %s ==\n' "$1"; }

section "packages"
if bash scripts/ensure-packages.sh "${needs[@]}"; then
	record packages ok "${needs[*]%%:*}"
else
	record packages WARN "some programs are missing: tests that need them fail under CI, skip otherwise"
fi

section "gofmt"
# testdata/ may hold Go files that are malformed on purpose.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	list_go() { git ls-files -co --exclude-standard -z -- '*.go' ':(exclude,glob)**/testdata/**'; }
else
	list_go() { find . -name '*.go' -not -path '*/testdata/*' -not -path './vendor/*' -print0; }
fi
if unformatted=$(list_go | xargs -0 -r gofmt -l) && [ -z "$unformatted" ]; then
	record gofmt ok
else
	echo "gofmt would change these files (run gofmt -w on them):"
	printf '%s\n' "$unformatted"
	record gofmt FAIL "see the list above"
fi

section "go vet"
if go vet ./...; then
	record "go vet" ok
else
	record "go vet" FAIL
fi

section "go test -race"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# -v so that passes, failures and skips can be counted; the noise of -v
# (=== RUN, --- PASS) goes to the log only.
set +e
go test -race -count=1 -timeout 15m -v ./... 2>&1 | tee "$log" |
	grep -Ev '^[[:space:]]*(=== (RUN|PAUSE|CONT|NAME)|--- PASS: )|^PASS$'
test_status=${PIPESTATUS[0]}
set -e
count() { grep -Ec "$1" "$log" || true; }
passed=$(count '^[[:space:]]*--- PASS: ')
skipped=$(count '^[[:space:]]*--- SKIP: ')
# A package that does not build has no --- FAIL line of its own.
test_failed=$(($(count '^[[:space:]]*--- FAIL: ') + $(count '^FAIL[[:space:]].*\[(build|setup) failed\]')))
if [ "$test_status" -eq 0 ]; then
	record "go test" ok "$passed passed, $skipped skipped"
else
	record "go test" FAIL "exit $test_status; $test_failed failed"
fi

section "summary"
printf '%s\n' "${results[@]}"
if [ "$failed" -ne 0 ]; then
	echo "RESULT: FAIL"
else
	echo "RESULT: ok"
fi
echo "tests: $passed passed, $test_failed failed, $skipped skipped"
exit "$failed"
