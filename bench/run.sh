#!/usr/bin/env bash
# run.sh measures tollgate against its peers in one run: requests/s and p99
# latency through each of the backend direct, tollgate, HAProxy and
# Nginx-as-proxy, on loopback, with the layout of DESIGN.md ("Hot path"):
#
#   CPU $LOAD_CPU  (1): the Nginx backend (one worker) and wrk (one thread)
#   CPU $PROXY_CPU (0): the proxy under test, alone (tollgate GOMAXPROCS=1,
#                       HAProxy nbthread 1, Nginx one worker)
#
# Settings (environment): DURATION=15s CONNS=64 THREADS=1 WARMUP=3s ROUNDS=1
# BASE_PORT=18180 (uses BASE_PORT..BASE_PORT+3) PROXY_CPU=0 LOAD_CPU=1
# TARGETS="direct tollgate tollgate_lr haproxy nginx" TOLLGATE_BIN= (default: build it).
# tollgate_lr is tollgate with one limit_req zone that never rejects.
# Results: a Markdown table on stdout and in bench/results/<UTC time>/ with
# the raw wrk outputs and the configs used. See bench/README.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
command -v go >/dev/null 2>&1 || PATH=$PATH:/usr/local/go/bin
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/sbin ;; esac
export PATH

DURATION=${DURATION:-15s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-1}
WARMUP=${WARMUP:-3s}
ROUNDS=${ROUNDS:-1}
BASE_PORT=${BASE_PORT:-18180}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
TARGETS=${TARGETS:-direct tollgate tollgate_lr haproxy nginx}
TOLLGATE_BIN=${TOLLGATE_BIN:-}

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

for v in CONNS THREADS ROUNDS BASE_PORT PROXY_CPU LOAD_CPU; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, not '${!v}'"
done
[ "$ROUNDS" -ge 1 ] || die "ROUNDS must be at least 1"
[ "$THREADS" -ge 1 ] && [ "$CONNS" -ge "$THREADS" ] || die "need 1 <= THREADS <= CONNS"
for t in $TARGETS; do
	case $t in direct | tollgate | tollgate_lr | haproxy | nginx) ;; *) die "unknown target '$t' in TARGETS" ;; esac
done

bash "$root/scripts/ensure-packages.sh" nginx:nginx-light,nginx haproxy:haproxy wrk:wrk taskset:util-linux ||
	die "nginx, haproxy and wrk are needed (see above)"
taskset -c "$PROXY_CPU" true 2>/dev/null && taskset -c "$LOAD_CPU" true 2>/dev/null ||
	die "CPUs $PROXY_CPU and $LOAD_CPU must both be usable (nproc: $(nproc)); set PROXY_CPU/LOAD_CPU"
[ "$PROXY_CPU" != "$LOAD_CPU" ] || die "PROXY_CPU and LOAD_CPU must differ"

declare -A port=(
	[direct]=$BASE_PORT
	[tollgate]=$((BASE_PORT + 1))
	[haproxy]=$((BASE_PORT + 2))
	[nginx]=$((BASE_PORT + 3))
	[tollgate_lr]=$((BASE_PORT + 4))
)
declare -A label=(
	[direct]="backend direct"
	[tollgate]=tollgate
	[tollgate_lr]="tollgate + limit_req"
	[haproxy]=HAProxy
	[nginx]="Nginx proxy"
)
declare -A status=() # target -> why it was not measured; empty: measured

work=$(mktemp -d /tmp/tollgate-bench.XXXXXX)
chmod 755 "$work" # nginx workers run as nobody when the master is root
pids=()

cleanup() {
	local pid all=() deadline
	for pid in "${pids[@]}"; do
		all+=("$pid" $(pgrep -P "$pid" || true)) # nginx workers too
	done
	if [ ${#all[@]} -gt 0 ]; then
		kill -TERM "${all[@]}" 2>/dev/null || true
		deadline=$((SECONDS + 5))
		for pid in "${all[@]}"; do
			while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
			kill -KILL "$pid" 2>/dev/null || true
		done
		wait 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# render TEMPLATE OUT KEY=VALUE... replaces every @KEY@ in TEMPLATE.
render() {
	local text kv
	text=$(<"$1")
	for kv in "${@:3}"; do
		text=${text//"@${kv%%=*}@"/"${kv#*=}"}
	done
	printf '%s\n' "$text" >"$2"
}

# port_open PORT reports whether something accepts connections on PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# answers_200 PORT reports whether GET / on PORT gets a 200.
answers_200() {
	(
		exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		printf 'GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n' >&3
		IFS= read -r -t 5 line <&3 || exit 1
		[[ $line =~ ^HTTP/1\.[01]\ 200 ]]
	) 2>/dev/null
}

# start NAME CPU STDOUT CMD... runs CMD pinned to CPU in the background; the
# pid is in $started. stderr goes to $work/NAME.err.
start() {
	local name=$1 cpu=$2 out=$3
	shift 3
	taskset -c "$cpu" "$@" >"$out" 2>"$work/$name.err" &
	started=$!
	pids+=("$started")
}

# wait_ready PID PORT waits up to 10 s for PORT to accept while PID lives.
wait_ready() {
	local i
	for ((i = 0; i < 100; i++)); do
		kill -0 "$1" 2>/dev/null || return 1
		port_open "$2" && return 0
		sleep 0.1
	done
	return 1
}

# stop PID ends one server that did not come up.
stop() {
	kill -TERM "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

# nginx_temp_paths DIR prints the *_temp_path directives for the modules
# this nginx has, so that nothing is created under /var/lib/nginx.
nginx_temp_paths() {
	local v m
	v=$(nginx -V 2>&1)
	echo "    client_body_temp_path $1/client_body;"
	for m in proxy fastcgi uwsgi scgi; do
		[[ $v == *"--without-http_${m}_module"* ]] || echo "    ${m}_temp_path $1/$m;"
	done
}

# start_nginx NAME CPU TEMPLATE KEY=VALUE... renders and starts one nginx.
start_nginx() {
	local name=$1 cpu=$2 tmpl=$3 dir=$work/$1
	shift 3
	mkdir -p "$dir"
	render "$tmpl" "$dir/nginx.conf" "DIR=$dir" "TEMP_PATHS=$(nginx_temp_paths "$dir")" "$@"
	start "$name" "$cpu" /dev/null nginx -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf"
}

for t in direct tollgate tollgate_lr haproxy nginx; do
	if port_open "${port[$t]}"; then
		die "port ${port[$t]} (for $t) is already in use; set BASE_PORT"
	fi
done

# --- tollgate binary -------------------------------------------------------
build_failed=0
tollgate=
if [[ " $TARGETS " == *" tollgate "* || " $TARGETS " == *" tollgate_lr "* ]]; then
	if [ -n "$TOLLGATE_BIN" ]; then
		[ -x "$TOLLGATE_BIN" ] || die "TOLLGATE_BIN=$TOLLGATE_BIN is not an executable"
		tollgate=$TOLLGATE_BIN
	elif [ ! -d "$root/cmd/tollgate" ]; then
		status[tollgate]="not built: cmd/tollgate does not exist yet"
	else
		log "building tollgate"
		if (cd "$root" && go build -o "$work/tollgate" ./cmd/tollgate) >"$work/build.log" 2>&1; then
			tollgate=$work/tollgate
		else
			cat "$work/build.log" >&2
			status[tollgate]="not built: go build ./cmd/tollgate failed (output above)"
			build_failed=1
		fi
	fi
fi

# --- servers ---------------------------------------------------------------
body=$(printf 'tollgate-bench-%049d' 0) # 64 bytes
backend=127.0.0.1:${port[direct]}

start_nginx direct "$LOAD_CPU" "$here/nginx-backend.conf.tmpl" "PORT=${port[direct]}" "BODY=$body"
if ! wait_ready "$started" "${port[direct]}" || ! answers_200 "${port[direct]}"; then
	cat "$work/direct.err" "$work/direct/error.log" >&2 2>/dev/null || true
	die "the nginx backend did not come up"
fi

tollgate_note=
if [ -n "$tollgate" ]; then
	# keepalive 64 as the Nginx proxy's upstream pool, so no leg churns
	# backend connections under wrk's 64 client connections.
	args=(proxy --listen "127.0.0.1:${port[tollgate]}" --to "http://$backend" --keepalive 64)
	# The access log would cost every request a JSON line; turn it off, and
	# when the binary has no such flag, throw the lines away instead.
	start tollgate "$PROXY_CPU" /dev/null env GOMAXPROCS=1 "$tollgate" "${args[@]}" --access-log=false
	tollgate_note="access log off (--access-log=false)"
	if ! wait_ready "$started" "${port[tollgate]}"; then
		stop "$started"
		log "tollgate did not start with --access-log=false: $(tail -n 1 "$work/tollgate.err")"
		log "retrying without it, access log to /dev/null"
		start tollgate "$PROXY_CPU" /dev/null env GOMAXPROCS=1 "$tollgate" "${args[@]}"
		tollgate_note="access log on, written to /dev/null (--access-log=false was rejected)"
		if ! wait_ready "$started" "${port[tollgate]}"; then
			stop "$started"
			status[tollgate]="failed to start: $(tail -n 1 "$work/tollgate.err")"
			tollgate_note=
			build_failed=1
		fi
	fi
fi

if [ -n "$tollgate" ] && [[ " $TARGETS " == *" tollgate_lr "* ]]; then
	# The same proxy with one limit_req zone keyed by client address that
	# never rejects: the cost of admission on every request.
	cat >"$work/tollgate_lr.yaml" <<YAML
listen:
  - addr: 127.0.0.1:${port[tollgate_lr]}
admin:
  addr: "off"
limit_req_zones:
  - name: perip
    key: \$binary_remote_addr
    size: 10m
    rate: 1000000r/s
upstreams:
  - name: backend
    keepalive: 64
    servers:
      - addr: $backend
routes:
  - path_prefix: /
    upstream: backend
    limit_req:
      - zone: perip
        burst: 1000000
        nodelay: true
YAML
	start tollgate_lr "$PROXY_CPU" /dev/null env GOMAXPROCS=1 "$tollgate" run -c "$work/tollgate_lr.yaml" --access-log=false
	if ! wait_ready "$started" "${port[tollgate_lr]}"; then
		stop "$started"
		status[tollgate_lr]="failed to start: $(tail -n 1 "$work/tollgate_lr.err")"
		build_failed=1
	fi
fi

if [[ " $TARGETS " == *" haproxy "* ]]; then
	mkdir -p "$work/haproxy"
	render "$here/haproxy.cfg.tmpl" "$work/haproxy/haproxy.cfg" \
		"PORT=${port[haproxy]}" "BACKEND_PORT=${port[direct]}"
	start haproxy "$PROXY_CPU" "$work/haproxy.out" haproxy -db -f "$work/haproxy/haproxy.cfg"
	if ! wait_ready "$started" "${port[haproxy]}"; then
		stop "$started"
		status[haproxy]="failed to start: $(tail -n 1 "$work/haproxy.err")"
	fi
fi

if [[ " $TARGETS " == *" nginx "* ]]; then
	start_nginx nginx "$PROXY_CPU" "$here/nginx-proxy.conf.tmpl" \
		"PORT=${port[nginx]}" "BACKEND_PORT=${port[direct]}"
	if ! wait_ready "$started" "${port[nginx]}"; then
		stop "$started"
		status[nginx]="failed to start: $(tail -n 1 "$work/nginx/error.log" 2>/dev/null)"
	fi
fi

# Only targets that are up and proxy a 200 are measured.
measured=()
for t in $TARGETS; do
	[ -z "${status[$t]:-}" ] || continue
	if answers_200 "${port[$t]}"; then
		measured+=("$t")
	else
		status[$t]="up, but GET / did not get a 200"
	fi
done
[ ${#measured[@]} -gt 0 ] || die "nothing to measure"

# --- measurement -----------------------------------------------------------
stamp=$(date -u +%Y%m%dT%H%M%SZ)
load_at_start=$(cut -d' ' -f1 /proc/loadavg)
out=$here/results/$stamp
mkdir -p "$out/raw" "$out/configs"

wrk_run() { # wrk_run DURATION PORT
	taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$CONNS" -d"$1" --latency "http://127.0.0.1:$2/"
}

# parse_wrk FILE prints "req/s p99_ms errors" from a wrk --latency output.
parse_wrk() {
	awk '
	function ms(v,  n, u) {
		n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
		if (u == "us") return n / 1000
		if (u == "s") return n * 1000
		if (u == "m") return n * 60000
		if (u == "h") return n * 3600000
		return n
	}
	/^Requests\/sec:/ { rps = $2 }
	$1 == "99%" { p99 = ms($2) }
	/Socket errors:/ { gsub(/,/, ""); errs += $4 + $6 + $8 + $10 }
	/Non-2xx or 3xx responses:/ { errs += $NF }
	END { printf "%s %s %d\n", (rps == "" ? "0" : rps), (p99 == "" ? "nan" : p99), errs }
	' "$1"
}

declare -A rps_list=() p99_list=() err_sum=()
n=${#measured[@]}
for ((round = 1; round <= ROUNDS; round++)); do
	for ((i = 0; i < n; i++)); do
		# Rotate the order each round so slow drift does not favour one target.
		t=${measured[$(((i + round - 1) % n))]}
		log "round $round/$ROUNDS: ${label[$t]}"
		if [ "$WARMUP" != 0 ] && [ "$WARMUP" != 0s ]; then
			wrk_run "$WARMUP" "${port[$t]}" >/dev/null
		fi
		raw=$out/raw/round$round-$t.txt
		wrk_run "$DURATION" "${port[$t]}" >"$raw"
		read -r rps p99 errs < <(parse_wrk "$raw")
		rps_list[$t]+="$rps "
		p99_list[$t]+="$p99 "
		err_sum[$t]=$((${err_sum[$t]:-0} + errs))
	done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
declare -A rps_med=() p99_med=()
for t in "${measured[@]}"; do
	rps_med[$t]=$(median <<<"${rps_list[$t]}")
	p99_med[$t]=$(median <<<"${p99_list[$t]}")
done

# ratio A B prints A/B to two places, or "—" when B is missing or zero.
ratio() { awk -v a="${1:-}" -v b="${2:-}" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "—"; else printf "%.2f\n", a / b }'; }

report() {
	local t
	echo "## tollgate benchmark, $stamp"
	echo
	echo "commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo none)$(git -C "$root" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)');" \
		"wrk -t$THREADS -c$CONNS -d$DURATION (warm-up $WARMUP), $ROUNDS round(s), median shown;" \
		"proxy on CPU $PROXY_CPU, backend + wrk on CPU $LOAD_CPU; 64-byte responses, keep-alive both hops."
	echo
	echo "| target | req/s | p99 ms | req/s ÷ HAProxy | p99 ÷ HAProxy | errors |"
	echo "|---|--:|--:|--:|--:|--:|"
	for t in direct tollgate tollgate_lr haproxy nginx; do
		[[ " $TARGETS " == *" $t "* ]] || continue
		if [ -n "${status[$t]:-}" ]; then
			echo "| ${label[$t]} | ${status[$t]} | | | | |"
			continue
		fi
		printf '| %s | %.0f | %.2f | %s | %s | %d |\n' "${label[$t]}" "${rps_med[$t]}" "${p99_med[$t]}" \
			"$(ratio "${rps_med[$t]}" "${rps_med[haproxy]:-}")" \
			"$(ratio "${p99_med[$t]}" "${p99_med[haproxy]:-}")" "${err_sum[$t]}"
	done
	echo
	echo "tollgate ÷ Nginx proxy: req/s $(ratio "${rps_med[tollgate]:-}" "${rps_med[nginx]:-}")," \
		"p99 $(ratio "${p99_med[tollgate]:-}" "${p99_med[nginx]:-}")"
	[[ " $TARGETS " != *" tollgate_lr "* ]] ||
		echo "tollgate + limit_req ÷ tollgate: req/s $(ratio "${rps_med[tollgate_lr]:-}" "${rps_med[tollgate]:-}")"
	[ -z "$tollgate_note" ] || echo "tollgate: $tollgate_note"
	echo
	echo "Load average at start: $load_at_start (anything else running on these CPUs makes the figures noisy; compare ratios)."
	echo "Errors are wrk socket errors plus non-2xx responses, summed over rounds; a row with errors is not a fair figure."
	echo "Versions: $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(haproxy -v | head -n 1 | awk '{print $1, $2, $3}')," \
		"$(go version | awk '{print $3}'), $(wrk --version 2>&1 | head -n 1 | awk '{print $1, $2}'), $(nproc) CPUs."
}

report | tee "$out/results.md"
cp "$work/direct/nginx.conf" "$out/configs/nginx-backend.conf"
[ ! -f "$work/nginx/nginx.conf" ] || cp "$work/nginx/nginx.conf" "$out/configs/nginx-proxy.conf"
[ ! -f "$work/haproxy/haproxy.cfg" ] || cp "$work/haproxy/haproxy.cfg" "$out/configs/haproxy.cfg"
log "results in ${out#"$root"/}/"
exit "$build_failed"
