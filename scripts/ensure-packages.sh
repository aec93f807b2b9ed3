#!/usr/bin/env bash
# ensure-packages.sh installs the Debian packages that provide the programs
# the tests and the benchmark run for real (see DESIGN.md, "Real components").
#
#   scripts/ensure-packages.sh PROGRAM:PACKAGE[,PACKAGE...] ...
#
# A program counts as present when it is on PATH or in /usr/sbin or /usr/bin
# (root's tools live in /usr/sbin, which a non-root PATH often lacks). For each
# missing program the packages are tried in order until one provides it, e.g.
# nginx:nginx-light,nginx (Debian 12 has both; later releases only nginx).
# `apt-get update` runs once, and only when something is missing. Installing
# runs as root, through sudo when not root; services the packages ship are not
# started (a temporary policy-rc.d), so nothing listens on port 80 afterwards.
#
# Exit status: 0 when every program is present at the end, 1 otherwise (after
# printing the command that would install the rest).
set -euo pipefail

usage() {
	echo "usage: $0 PROGRAM:PACKAGE[,PACKAGE...] ..." >&2
	exit 2
}
[ $# -gt 0 ] || usage

have() {
	command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]
}

missing=()
for spec in "$@"; do
	case $spec in *:?*) ;; *) usage ;; esac
	have "${spec%%:*}" || missing+=("$spec")
done
[ ${#missing[@]} -eq 0 ] && exit 0

first_packages() {
	local spec
	for spec in "${missing[@]}"; do
		printf '%s ' "$(cut -d, -f1 <<<"${spec#*:}")"
	done
}

sudo=()
if [ "$(id -u)" -ne 0 ]; then
	if ! command -v sudo >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
		echo "missing: $(first_packages)" >&2
		echo "install them as root with: apt-get update && apt-get install -y $(first_packages)" >&2
		exit 1
	fi
	sudo=(sudo)
	# Without a terminal, sudo must not wait for a password nobody can type.
	[ -t 0 ] || sudo=(sudo -n)
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "missing: $(first_packages)(no apt-get here: install them with this system's package manager)" >&2
	exit 1
fi

apt_get() {
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get -o DPkg::Lock::Timeout=300 "$@"
}

# A package's postinst would start its service (nginx on :80, haproxy) where
# an init system is reachable; policy-rc.d exit 101 forbids that. Leave an
# existing one alone, remove ours on exit.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
	"${sudo[@]}" sh -c "printf '#!/bin/sh\nexit 101\n' >$policy && chmod 755 $policy"
	trap '"${sudo[@]}" rm -f "$policy"' EXIT
fi

echo "installing packages for: ${missing[*]%%:*}" >&2
apt_get update -qq || echo "apt-get update failed; trying the package lists already here" >&2

status=0
for spec in "${missing[@]}"; do
	program=${spec%%:*}
	IFS=, read -r -a packages <<<"${spec#*:}"
	for pkg in "${packages[@]}"; do
		apt_get install -y -qq --no-install-recommends "$pkg" >&2 || continue
		have "$program" && break
	done
	if ! have "$program"; then
		echo "could not install $program (tried: ${packages[*]})" >&2
		status=1
	fi
done
exit $status
