#!/usr/bin/env bash
# The acceptance run of the line outputs (docs/streams.md, "On the line"): an RTSP camera on 127.0.0.1
# (gst-rtsp-server), a Mosquitto broker, `infer` on a GStreamer pipeline with --mqtt and --http, a
# `mosquitto_sub -t 'line/#'` counting the decisions, and curl of / and /metrics while it runs.
#   bash benchmarks/line_acceptance.sh MODEL.onnx [WORKDIR]
set -euo pipefail
MODEL=$1
WORK=${2:-$(mktemp -d)}
mkdir -p "$WORK"
RTSP_PORT=18554 MQPORT=18830 HTTPPORT=18080
# The RTSP camera and the browser are the tests' loopback servers (tests/support/).
export PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)/tests${PYTHONPATH:+:$PYTHONPATH}"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

python -m support.gst_rtsp "$RTSP_PORT" /line 30 >"$WORK/rtsp.log" 2>&1 & pids+=($!)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nuser %s\n' "$MQPORT" "$(id -un)" >"$WORK/mosquitto.conf"
mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 & pids+=($!)
sleep 2
mosquitto_sub -h 127.0.0.1 -p "$MQPORT" -q 1 -t 'line/#' -v >"$WORK/sub.txt" & pids+=($!)
sleep 1

set -x
dualkd-edge infer "$MODEL" "rtspsrc location=rtsp://127.0.0.1:$RTSP_PORT/line latency=0 ! rtph264depay ! avdec_h264 ! videoconvert ! appsink" \
  --max-frames 150 --mqtt "mqtt://127.0.0.1:$MQPORT/line/cam1" --http "127.0.0.1:$HTTPPORT" \
  >"$WORK/infer.out" 2>"$WORK/infer.err" &
INFER=$!
{ set +x; } 2>/dev/null
pids+=($INFER)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$HTTPPORT/metrics" | grep -q '^dualkd_frames_total{.*} [1-9]' && break; sleep 0.1; done
curl -s -o "$WORK/page.html" -w 'GET / -> %{http_code} %{content_type}\n' "http://127.0.0.1:$HTTPPORT/"
grep -o '<title>[^<]*</title>' "$WORK/page.html"
curl -s "http://127.0.0.1:$HTTPPORT/metrics" >"$WORK/metrics.txt"
echo "GET /metrics:"; grep '^dualkd_frames_total' "$WORK/metrics.txt"
# The operator page in headless Chromium, as an operator sees it (docs/dashboard.md).
python - "$HTTPPORT" "$WORK/dashboard.png" <<'PY' || echo "no screenshot (chromium missing?)"
import sys, time
from support.browser import HeadlessChromium
with HeadlessChromium(width=1600, height=1000) as browser:
    browser.navigate(f"http://127.0.0.1:{sys.argv[1]}/")
    browser.wait_for("document.getElementById('live-0') && document.getElementById('live-0').naturalWidth > 0")
    time.sleep(2)
    browser.screenshot(sys.argv[2])
print("screenshot:", sys.argv[2])
PY
wait "$INFER"; echo "infer exit status: $?"
sleep 2
cat "$WORK/infer.out"
echo "line/cam1 decisions received: $(grep -c '^line/cam1 {' "$WORK/sub.txt")"
echo "distinct frames among them: $(grep '^line/cam1 {' "$WORK/sub.txt" | cut -d' ' -f2- | python -c 'import sys, json; print(len({json.loads(l)["frame"] for l in sys.stdin}))')"
echo "status messages: $(grep '^line/cam1/status' "$WORK/sub.txt" | cut -d' ' -f2 | tr '\n' ' ')"
