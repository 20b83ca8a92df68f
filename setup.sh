#!/usr/bin/env bash
# Installs what XLB needs on a Debian machine (idempotent) and builds it.
# Sourced by demo.sh and test.sh; safe to run on its own.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

# bird2: the BGP neighbour the announcement tests peer with (never started as a service here).
packages=(clang llvm libbpf-dev bpftool iproute2 ethtool bird2)
# --bench: also what the end-to-end traffic bench compares with (bench/README.md).
if [ "${1:-}" = "--bench" ]; then
  packages+=(wrk nginx-light haproxy)
fi
missing=()
for p in "${packages[@]}"; do
  # Installed, not merely known to dpkg (a removed package keeps its configuration files).
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  # No package starts a daemon here (bird2, nginx and haproxy would): tests and benches run their own, inside their namespaces.
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  if [ -n "$policy" ]; then rm -f "$policy"; fi
fi

if ! command -v dotnet >/dev/null 2>&1; then
  echo "setup: the .NET SDK 10 is required (dotnet not found on PATH)" >&2
  exit 1
fi
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

dotnet restore Xlb.sln --verbosity quiet
dotnet build Xlb.sln -c Release --no-restore --verbosity quiet -nologo -clp:ErrorsOnly
