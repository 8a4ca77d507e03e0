#!/usr/bin/env bash
# The main job on the built-in default: install, build, start qopt-server with a local
# worker on loopback, and submit the bundled model (zoo/small_cnn.pt, trained on
# Fashion-MNIST) with examples/recipes/fashion_mnist_w8a8.json through the qopt CLI:
# W8A8 (per-channel weights, SQNR calibration on 512 training images, batch norms
# folded), evaluated on the 10 000 test images. Shows live progress, downloads the
# artifacts and prints FP32 vs W8A8 accuracy.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${QOPT_BUILD_DIR:-$root/build}
out=${QOPT_DEMO_DIR:-$root/out/demo}
bash "$root/scripts/build.sh"

mkdir -p "$out"
source "$root/scripts/qopt_server.sh"
start_qopt_server "$build/server/qopt-server" "$out/server.log" \
  --listen 127.0.0.1:0 --data-dir "$out/server-data" --local-workers 1
trap 'kill $QOPT_SERVER_PID 2>/dev/null; wait $QOPT_SERVER_PID 2>/dev/null || true' EXIT
echo "== qopt-server on $QOPT_SERVER with one local worker"

qopt="$build/client/qopt"
echo "== qopt submit examples/recipes/fashion_mnist_w8a8.json (uploads model and data)"
job=$("$qopt" submit "$root/examples/recipes/fashion_mnist_w8a8.json")
echo "   job $job"
"$qopt" watch "$job"
for artifact in model.pt model.encodings report.json; do
  "$qopt" download "$job" "$artifact" -o "$out/$artifact" > /dev/null
done
/usr/bin/python3 - "$out/report.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]
print("== result (Fashion-MNIST test set, %d images)" % m["eval_samples"])
print("   FP32 top-1 %.2f %%   W8A8 top-1 %.2f %%   (change %+.2f pt)" % (
    100 * m["fp32_top1"], 100 * m["top1"], 100 * (m["top1"] - m["fp32_top1"])))
print("   output SQNR %.1f dB, top-1 agreement %.2f %%, mean KL %.5f" % (
    m["output_sqnr_db"], 100 * m["top1_agreement"], m["mean_kl"]))
PY
echo "== artifacts in $out: model.pt (TorchScript with fake-quant ops), model.encodings (AIMET), report.json"
