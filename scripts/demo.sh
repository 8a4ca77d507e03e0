#!/usr/bin/env bash
# The main job on the built-in default: install, build, and quantize the bundled model
# (zoo/small_cnn.pt, trained on Fashion-MNIST) to W8A8 (per-channel weights, SQNR
# calibration on 512 training images, batch norms folded), evaluate it on the 10 000-image
# test set against FP32, export it, and print the result.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${QOPT_BUILD_DIR:-$root/build}
out=${QOPT_DEMO_DIR:-$root/out/demo}
bash "$root/scripts/build.sh"
echo "== qopt-worker run examples/recipes/fashion_mnist_w8a8.json"
"$build/worker/qopt-worker" run --recipe "$root/examples/recipes/fashion_mnist_w8a8.json" --out "$out"
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
