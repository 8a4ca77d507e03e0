#!/usr/bin/env bash
# report.html in a real browser: a job on the zoo's ResNet18 with real Fashion-MNIST runs
# cross-layer equalization, mixed precision, AdaRound, the analysis and a short spatial
# SVD, then Debian's headless Chromium renders the worker's report.html. The DOM dump must
# hold every expected section with its charts, the screenshot must show a page (not
# blank), and the page must fetch nothing.
set -eu
worker=${QOPT_WORKER:?}
src=${QOPT_SOURCE_DIR:?}
python=${QOPT_PYTHON:-/usr/bin/python3}
fm=/usr/share/datasets/fashion-mnist
chromium=$(command -v chromium || true)
[ -n "$chromium" ] || { echo "chromium is missing: run scripts/install_deps.sh"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cat > "$tmp/recipe.json" <<JSON
{"name": "report <check>", "model": {"path": "$src/zoo/resnet18.pt"},
 "calibration_data": {"path": "$fm/train-images-idx3-ubyte.gz", "max_samples": 256, "batch_size": 64,
                      "preprocess": {"mean": [0.286], "std": [0.353]}},
 "evaluation_data": {"path": "$fm/t10k-images-idx3-ubyte.gz", "labels_path": "$fm/t10k-labels-idx1-ubyte.gz",
                     "max_samples": 500, "batch_size": 250, "preprocess": {"mean": [0.286], "std": [0.353]}},
 "quantization": {"param_bitwidth": 4, "activation_bitwidth": 8, "per_channel": true},
 "num_threads": 2,
 "steps": [{"fold_batch_norm": {}},
           {"spatial_svd": {"ratios": {"target_ratio": 0.9, "num_candidates": 3, "eval_batches": 1}}},
           {"cross_layer_equalization": {}}, {"calibrate": {}},
           {"mixed_precision": {"num_batches": 1, "candidates": [{"activation_bits": 8, "param_bits": 4},
                                                                 {"activation_bits": 8, "param_bits": 8}]}},
           {"adaround": {"num_iterations": 20, "num_batches": 1}},
           {"analyze": {"activation_samples": 64}}, {"evaluate": {}}]}
JSON
"$worker" run --quiet --recipe "$tmp/recipe.json" --out "$tmp/out" > "$tmp/run.log"
html="$tmp/out/report.html"
[ -s "$html" ] || { echo "no report.html"; ls "$tmp/out"; exit 1; }
if grep -Eq '(src|href)="?(https?:)?//' "$html"; then echo "report.html fetches from the network"; exit 1; fi

flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run --disable-extensions
       --user-data-dir="$tmp/profile" --window-size=1280,2400)
timeout 120 "$chromium" "${flags[@]}" --dump-dom "file://$html" > "$tmp/dom.html" 2> "$tmp/chromium.log" ||
  { echo "chromium --dump-dom failed"; tail "$tmp/chromium.log"; exit 1; }
timeout 120 "$chromium" "${flags[@]}" --screenshot="$tmp/shot.png" "file://$html" >> "$tmp/chromium.log" 2>&1 ||
  { echo "chromium --screenshot failed"; tail "$tmp/chromium.log"; exit 1; }

"$python" - "$tmp/dom.html" "$tmp/shot.png" "$tmp/out/report.json" <<'PY'
import json, re, sys
import torch
from torchvision.io import read_image

dom, shot, report = open(sys.argv[1]).read(), sys.argv[2], json.load(open(sys.argv[3]))
steps = {s["step"]: s["index"] for s in report["steps"]}
a, c, s = steps["analyze"], steps["cross_layer_equalization"], steps["spatial_svd"]
expected = ["summary", "steps", f"step-{a}-sensitivity", f"step-{a}-sqnr", f"step-{a}-weight-ranges",
            f"step-{a}-histograms", f"step-{a}-layers", f"step-{c}-equalized-ranges", f"step-{s}-eval-dictionary",
            f"step-{steps['adaround']}-layers", f"step-{steps['adaround']}-curves",
            f"step-{steps['mixed_precision']}-pareto", f"step-{steps['mixed_precision']}-layers"]
missing = [i for i in expected if f'id="{i}"' not in dom]
assert not missing, f"sections missing from the rendered DOM: {missing}"
# The browser parsed the charts: one per analyzed group's weights and histograms at least.
svgs = len(re.findall(r"<svg", dom))
groups = sum(1 for _ in report["steps"][a - 1]["layers"])
assert svgs > groups, (svgs, groups)
assert "<script" not in dom and "report &lt;check&gt;" in dom
# The recipe's name is text: the title shows it escaped, not as a tag.
img = read_image(shot)  # C x H x W, uint8
assert img.shape[1] >= 1000 and img.shape[2] >= 1000, img.shape
pixels = img.permute(1, 2, 0).reshape(-1, img.shape[0]).to(torch.int64)
colors = torch.unique(pixels[:, 0] * 65536 + pixels[:, 1] * 256 + pixels[:, 2]).numel()
share_white = (pixels.sum(1) >= 3 * 245).double().mean().item()
assert colors > 50, f"screenshot has {colors} colours: blank page?"
assert share_white < 0.97, f"screenshot is {share_white:.1%} white"
print(f"report.html: {len(expected)} sections, {svgs} SVG charts; screenshot {img.shape[2]}x{img.shape[1]}, "
      f"{colors} colours, {share_white:.0%} near-white")
PY
