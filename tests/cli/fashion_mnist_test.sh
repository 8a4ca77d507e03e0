#!/usr/bin/env bash
# The bundled default on real data: zoo/small_cnn.pt, W8A8, evaluated on the full
# Fashion-MNIST test set. The FP32 accuracy must equal the zoo card's and W8A8 must stay
# within 1 point of it.
set -eu
worker=${QOPT_WORKER:?}
src=${QOPT_SOURCE_DIR:?}
python=${QOPT_PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$worker" run --recipe "$src/examples/recipes/fashion_mnist_w8a8.json" --out "$tmp/out" > "$tmp/log"
grep -q "evaluate.*100%" "$tmp/log" || { echo "no evaluation progress"; cat "$tmp/log"; exit 1; }
"$python" - "$tmp/out/report.json" "$src/zoo/small_cnn.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]
card = json.load(open(sys.argv[2]))
assert m["eval_samples"] == 10000, m
assert abs(m["fp32_top1"] - card["fp32_test_accuracy"]) < 1e-9, (m["fp32_top1"], card)
assert abs(m["top1"] - m["fp32_top1"]) < 0.01, m
assert m["top5"] >= m["top1"] and m["top1_agreement"] > 0.98 and m["output_sqnr_db"] > 25, m
print("ok: FP32 %.4f, W8A8 %.4f, SQNR %.1f dB, agreement %.4f, KL %.5f" % (
    m["fp32_top1"], m["top1"], m["output_sqnr_db"], m["top1_agreement"], m["mean_kl"]))
PY
