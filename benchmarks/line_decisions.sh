#!/usr/bin/env bash
# The acceptance run of "Decisions that hold on a real line" (docs/commissioning.md), from a clone:
#   bash benchmarks/line_decisions.sh [WORKDIR]
# Trains on still images, films commissioning / line / dimmed-line videos (ffmpeg, libx264), then runs
# the commands exactly as a line engineer would, and measures false alarms, catch rate, drift and swaps.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${1:-$(mktemp -d)}
mkdir -p "$WORK"
python "$HERE/line_decisions.py" make "$WORK"
cd "$WORK"
set -x
dualkd-edge calibrate m.onnx commission.mp4 --frames 150 --max-fpr 0.01
dualkd-edge infer m.onnx line.mp4 --jsonl line.jsonl
dualkd-edge infer m.onnx shifted.mp4 --out shifted/ 2> shifted.err
{ set +x; } 2>/dev/null
grep -i drift shifted.err || true
python - <<'PY'
import json
d = json.load(open("shifted/summary.json"))["drift"]
print("shifted/summary.json drift:", {k: d[k] for k in ("alarm", "first_frame", "median_rank", "statistic")})
PY
python "$HERE/line_decisions.py" line "$WORK"
python "$HERE/line_decisions.py" drift "$WORK"
python "$HERE/line_decisions.py" swap "$WORK"
dualkd-edge info m.onnx
echo "results in $WORK (line.json, swap.json, drift.json)"
