#!/usr/bin/env bash
# Every test tier: unit, ABI layout, BPF packet tests and end-to-end tests in network namespaces.
# As root (and in CI) the privileged tiers must run: one that cannot fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh

if [ "$(id -u)" -eq 0 ] || [ "${CI:-}" = "true" ]; then
  export XLB_REQUIRE_PRIVILEGED=1
fi

results=artifacts/test-results
rm -rf "$results"
set +e
dotnet test Xlb.sln -c Release --no-build --verbosity quiet \
  --logger "trx;LogFileName=xlb.trx" --logger "console;verbosity=normal" --results-directory "$results"
status=$?
set -e

# The closing line, counted from the test results: total, executed, passed, failed.
trx=$(find "$results" -name '*.trx' | head -n 1)
if [ -z "$trx" ]; then
  echo "tests: no test results were written" >&2
  exit 1
fi
counter() { grep -o "<Counters [^>]*" "$trx" | grep -o " $1=\"[0-9]*\"" | grep -o '[0-9]*'; }
total=$(counter total); executed=$(counter executed); passed=$(counter passed); failed=$(counter failed)
skipped=$((total - executed))
echo "tests: ${passed} passed, ${failed} failed, ${skipped} skipped"
exit $status
