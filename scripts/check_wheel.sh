#!/usr/bin/env bash
# The wheel works outside the checkout: build it, install it into a clean venv, and from an empty directory fit a
# judge on the bundled example pairs and start the studio until its page answers. Exits non-zero on any failure.
# Needs no model hub (HF_HUB_OFFLINE=1): the offline model and the assets come from installed packages.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
server=""
cleanup() {
  if [[ -n "$server" ]]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
export SYNTH_DATA_DIR="$work/data"  # the studio's persona store: never the user's own
venv="$work/venv"
step() { echo "== $* ($(date +%T))"; }

step "clean venv"
python3 -m venv "$venv"
# The CPU build of torch first, from the local wheel folder: an unpinned torch would pull a multi-GB CUDA build.
"$venv/bin/pip" install -q "torch==2.13.0"

step "build and install the wheel"
"$venv/bin/pip" wheel --no-deps -q "$root" -w "$work/dist"
"$venv/bin/pip" install -q "$work"/dist/*.whl

mkdir "$work/run"
cd "$work/run"  # outside the checkout: only the installed package can be imported
"$venv/bin/python" - <<'EOF'
import components, synth
for module in (components, synth):
    assert "site-packages" in module.__file__, f"{module.__name__} imported from {module.__file__}, not the wheel"
EOF

step "synth fit --quick on 5 bundled example pairs"
pairs="$("$venv/bin/python" -c "from synth.paths import asset_path; print(asset_path('example_pairs.jsonl'))")"
head -n 5 "$pairs" > five.jsonl
"$venv/bin/synth" fit five.jsonl --quick --no-cache --quiet -o artifact.json
"$venv/bin/python" -c "
import json
artifact = json.load(open('artifact.json', encoding='utf-8'))
assert 'persona' in artifact and artifact['traces'], 'the artifact has no persona or traces'
print('artifact written:', len(artifact['traces']), 'traces, persona of', len(artifact['persona']), 'characters')"

step "synth app answers on loopback"
port="$("$venv/bin/python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")"
"$venv/bin/synth" app --host 127.0.0.1 --port "$port" > app.log 2>&1 &
server=$!
for _ in $(seq 300); do
  if [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/" || true)" == 200 ]]; then
    echo "page served (HTTP 200) on port $port"
    exit 0
  fi
  if ! kill -0 "$server" 2>/dev/null; then
    echo "synth app exited before serving the page:" >&2
    cat app.log >&2
    exit 1
  fi
  sleep 1
done
echo "synth app did not serve the page within 300 s:" >&2
cat app.log >&2
exit 1
