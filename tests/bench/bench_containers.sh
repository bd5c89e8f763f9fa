#!/bin/sh
# GET /v1/containers p50/p99 through the agent next to the same list straight
# on the engine's socket, same run (a private podman service). See ctrbench/main.go.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
: "${VM_AGENT_BIN:?set VM_AGENT_BIN}"
cd "$here/ctrbench"
GO111MODULE=off GOFLAGS= GOPROXY=off CGO_ENABLED=0 GOCACHE="${BUILD_DIR:-/tmp}/gocache" \
  go run . -bin "$VM_AGENT_BIN" "$@"
