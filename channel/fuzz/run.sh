#!/bin/sh
# Runs each fuzz target of keywarden-channel for a bounded time (default 60 s each).
# Needs a nightly toolchain and cargo-fuzz (`cargo +nightly install cargo-fuzz`).
# Usage: channel/fuzz/run.sh [seconds-per-target]
set -eu
secs="${1:-60}"
cd "$(dirname "$0")"
for target in handshake_messages transport_frames; do
    echo "fuzz: $target for ${secs}s"
    cargo +nightly fuzz run "$target" -- -max_total_time="$secs" -max_len=4096 -rss_limit_mb=2048
done
echo "fuzz: no crash"
