#!/usr/bin/env bash
# The standalone demo: client, LB node and three backends in network namespaces, the standalone
# operator and agent on examples/demo, real HTTP through XDP. Run as root. Extra arguments go to
# `xlb demo` (for example --requests 1000).
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh
exec agent/Xlb.Cli/bin/Release/net10.0/xlb demo --manifests examples/demo "$@"
