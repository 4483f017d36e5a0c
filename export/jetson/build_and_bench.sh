#!/usr/bin/env bash
# On the Jetson: check the ONNX files against the installed TensorRT, build the engines there (each
# is compared with its ONNX before it is kept), compare them side by side and benchmark them.
#
#   export/jetson/build_and_bench.sh m.onnx [m.int8.onnx] [--calib calib_data/] [--images data/] [--out jetson/]
#
# m.onnx: the FP32 export (an FP16 engine is built from it); m.int8.onnx: the Q/DQ model of
# `dualkd-edge quantize --target tensorrt` (an INT8 engine). --images: a folder (an MVTec-style
# dataset adds AUROC) for the comparison; default: the calibration images. DRY_RUN=1 prints the
# commands instead of running them.
set -euo pipefail

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
onnx=""; int8=""; calib=""; images=""; out="jetson"
while [ $# -gt 0 ]; do
  case "$1" in
    --calib) calib="$2"; shift 2 ;;
    --images) images="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) usage ;;
    *.onnx) if [ -z "$onnx" ]; then onnx="$1"; else int8="$1"; fi; shift ;;
    *) echo "error: unexpected argument $1 (expected .onnx files and --calib/--images/--out)" >&2; exit 2 ;;
  esac
done
[ -n "$onnx" ] || { echo "error: MODEL: give the FP32 .onnx export" >&2; exit 2; }
images="${images:-$calib}"

run() { echo "+ $*"; if [ "${DRY_RUN:-0}" != 1 ]; then "$@"; fi; }

if [ "${DRY_RUN:-0}" != 1 ]; then
  python3 -c "import tensorrt; print('TensorRT', tensorrt.__version__)" \
    || { echo "error: TensorRT's Python bindings are missing (JetPack installs them)" >&2; exit 2; }
  command -v nvpmodel >/dev/null && nvpmodel -q || echo "note: nvpmodel not found (not a Jetson?)"
  echo "note: for stable timings run 'sudo nvpmodel -m 0 && sudo jetson_clocks' first"
  mkdir -p "$out"
fi
trt_version=$(python3 -c "import tensorrt; print(tensorrt.__version__)" 2>/dev/null || echo 10.3.0)

calib_args=(); [ -n "$calib" ] && calib_args=(--calib "$calib")
run dualkd-edge check "$onnx" --tensorrt "$trt_version"
run dualkd-edge build "$onnx" --out "$out/model.fp16.engine" --precision fp16 "${calib_args[@]}"
engines=("$out/model.fp16.engine")
if [ -n "$int8" ]; then
  run dualkd-edge check "$int8" --tensorrt "$trt_version"
  run dualkd-edge build "$int8" --out "$out/model.int8.engine" --precision int8 "${calib_args[@]}"
  engines+=("$out/model.int8.engine")
fi
if [ -n "$images" ]; then
  run dualkd-edge compare "$onnx" "${engines[@]}" --images "$images" --json "$out/compare.json"
fi
run dualkd-edge bench "$onnx" "${engines[@]}" --batch 1 --markdown "$out/bench.md" --json "$out/bench.json"
