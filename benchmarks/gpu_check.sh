#!/usr/bin/env bash
# GPU check of the PyTorch model (eager / CUDA graphs / torch.compile x FP32 / FP16 / BF16, see gpu_check.py).
#   bash benchmarks/gpu_check.sh [--dry-run] [--out DIR] [other gpu_check.py options]
# Writes nvidia-smi.txt, versions.txt, log.txt, results.json, results.md into DIR
# (default benchmarks/results/gpu-check-<UTC time>/). Python: $PYTHON, else .venv/bin/python, else python.
# The run is killed after $GPU_CHECK_TIMEOUT_S (default 465 s); rows measured until then stay in results.json.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="" ARGS=()
while (($#)); do
  case "$1" in
    --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
    --out=*) OUT="${1#--out=}"; shift ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
OUT="${OUT:-$ROOT/benchmarks/results/gpu-check-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
PY="${PYTHON:-}"
[[ -n "$PY" ]] || { [[ -x "$ROOT/.venv/bin/python" ]] && PY="$ROOT/.venv/bin/python"; } || PY="$(command -v python || command -v python3)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
else echo "nvidia-smi: not found" >"$OUT/nvidia-smi.txt"; fi
"$PY" -c 'import sys, platform, torch
print("python", sys.version.split()[0], platform.platform())
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "cuda_available", torch.cuda.is_available())
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
try:
    import timm; print("timm", timm.__version__)
except ImportError as e: print("timm missing:", e)' >"$OUT/versions.txt" 2>&1 || true

rc=0
timeout -k 10 "${GPU_CHECK_TIMEOUT_S:-465}" "$PY" "$ROOT/benchmarks/gpu_check.py" --out "$OUT" ${ARGS[@]+"${ARGS[@]}"} 2>&1 \
  | tee "$OUT/log.txt" || rc=$?
echo "gpu_check: exit $rc, results in $OUT"
exit "$rc"
