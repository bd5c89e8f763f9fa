#!/bin/sh
# Probe throughput (`true` probes/s end to end through the API) and API
# latency at a fixed rate, each next to a reference measured in the same run
# (fork+exec of /bin/true; GET /v1/livez). See probebench/main.go.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
: "${VM_AGENT_BIN:?set VM_AGENT_BIN}"
cd "$here/probebench"
GO111MODULE=off GOFLAGS= GOPROXY=off CGO_ENABLED=0 GOCACHE="${BUILD_DIR:-/tmp}/gocache" \
  go run . -bin "$VM_AGENT_BIN" "$@"
