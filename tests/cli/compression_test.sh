#!/usr/bin/env bash
# Compression through `qopt-worker run` on the zoo's ResNet18 and real Fashion-MNIST:
# spatial SVD then channel pruning with greedy ratios, label-free fine-tuning, W8A8 and
# export. The report's costs equal what stock PyTorch counts on the exported model
# (tests/python/check_compression.py), a saved eval dictionary is reused without scoring,
# and bad input fails with the reason and writes nothing.
set -eu
worker=${QOPT_WORKER:?}
src=${QOPT_SOURCE_DIR:?}
python=${QOPT_PYTHON:-/usr/bin/python3}
fm=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

data='"calibration_data": {"path": "'$fm'/train-images-idx3-ubyte.gz", "max_samples": 256, "shuffle": true, "seed": 1, "batch_size": 64, "preprocess": {"mean": [0.286], "std": [0.353]}},
  "evaluation_data": {"path": "'$fm'/t10k-images-idx3-ubyte.gz", "labels_path": "'$fm'/t10k-labels-idx1-ubyte.gz", "max_samples": 1000, "batch_size": 250, "preprocess": {"mean": [0.286], "std": [0.353]}},
  "quantization": {"param_bitwidth": 8, "activation_bitwidth": 8, "per_channel": true}'
svd='{"spatial_svd": {"ratios": {"target_ratio": 0.8, "num_candidates": 5, "eval_batches": 2, "exclude_layers": ["conv1", "layer1.0.conv2"]SAVED}}}'
cat > "$tmp/compress.json" <<JSON
{"name": "compress", "model": {"path": "$src/zoo/resnet18.pt"}, $data,
 "steps": [{"fold_batch_norm": {}}, ${svd//SAVED/},
           {"channel_pruning": {"ratios": {"target_ratio": 0.8, "num_candidates": 5, "eval_batches": 2,
                                           "layer_ratios": {"layer1.0.conv2": 0.5}},
                                "num_reconstruction_samples": 1000}},
           {"fine_tune": {"epochs": 1, "max_steps_per_epoch": 30, "loss": "distill"}},
           {"calibrate": {}}, {"evaluate": {}}, {"export": {}}]}
JSON
"$worker" run --recipe "$tmp/compress.json" --out "$tmp/out" > "$tmp/compress.log"
grep -q "eval dictionary: layer" "$tmp/compress.log" || { echo "no eval dictionary progress"; tail "$tmp/compress.log"; exit 1; }
"$python" "$src/tests/python/check_compression.py" "$tmp/out" "$src/zoo/resnet18.pt"
"$python" - "$tmp/out" <<'PY'
import json, os, sys
out = sys.argv[1]
report = json.load(open(out + "/report.json"))
steps = {s["step"]: s for s in report["steps"]}
for name in ("spatial_svd", "channel_pruning"):
    s = steps[name]
    f = s["figures"]
    assert s["artifacts"] == [name + "_eval_scores.json"], s["artifacts"]
    assert os.path.exists(os.path.join(out, name + "_eval_scores.json"))
    assert f["macs_after"] < f["macs_before"] and f["params_after"] < f["params_before"], f
    # The greedy search meets the target and the candidates' granularity keeps it close.
    assert 0.6 < f["achieved_ratio"] <= 0.8 + 1e-9, f["achieved_ratio"]
    assert f["eval_samples"] == 500 and f["evaluations"] > 0 and 0 < f["eval_seconds"] <= f["search_seconds"], f
    assert 0.5 < f["top1"] <= 1 and 0.85 < f["original_top1"] <= 1, f
    d = s["details"]["eval_dictionary"]
    assert d["method"] == name and d["score"] == "top1" and d["cost_metric"] == "macs", d
    for layer, candidates in d["layers"].items():
        assert [c["ratio"] for c in candidates] == [0.2, 0.4, 0.6, 0.8], (layer, candidates)
        assert all(c["cost"] <= d["original_cost"] for c in candidates), (layer, candidates)
    rows = {r["layer"]: r for r in s["layers"]}
    for r in rows.values():
        labels = r.get("labels", {})
        assert not ("compressed" in labels and "skipped" in labels), r
        assert ("compressed" in labels) == (r["figures"]["ratio"] < 1), r
    assert any("compressed" in r.get("labels", {}) for r in rows.values()), rows
svd_rows = {r["layer"]: r for r in steps["spatial_svd"]["layers"]}
assert svd_rows["conv1"]["labels"]["skipped"] == "excluded by the recipe", svd_rows["conv1"]
assert "nothing to split spatially" in svd_rows["layer2.0.downsample.0"]["labels"]["skipped"], svd_rows["layer2.0.downsample.0"]
assert "linear" in svd_rows["fc"]["labels"]["skipped"]
cp_rows = {r["layer"]: r for r in steps["channel_pruning"]["layers"]}
assert cp_rows["layer1.0.conv2"]["figures"]["ratio"] == 0.5, cp_rows["layer1.0.conv2"]
# A block's first convolution (or the first of its SVD pair) reads the residual add.
first = cp_rows.get("layer2.0.conv1", cp_rows.get("layer2.0.conv1.0"))
assert "add" in first["labels"]["skipped"], first
# The SVD's new layers are pruned like any other: their names carry the split.
assert any(name.endswith(".1") for name in cp_rows), sorted(cp_rows)
ft = steps["fine_tune"]["figures"]
assert ft["epochs"] == 1 and 0.5 < ft["top1_before"] <= 1 and 0.5 < ft["top1"] <= 1, ft
ev = steps["evaluate"]["figures"]
assert abs(ev["fp32_top1"] - ft["top1"]) < 1e-9, (ev["fp32_top1"], ft["top1"])
print("compression report ok: MACs %d -> %d, top-1 %.4f -> %.4f (compressed) -> %.4f (fine-tuned) -> %.4f (W8A8)" % (
    steps["spatial_svd"]["figures"]["macs_before"], steps["channel_pruning"]["figures"]["macs_after"],
    steps["spatial_svd"]["figures"]["original_top1"], steps["channel_pruning"]["figures"]["top1"], ft["top1"], ev["top1"]))
PY

# The saved eval dictionary: the same choice, nothing scored again.
cat > "$tmp/again.json" <<JSON
{"name": "again", "model": {"path": "$src/zoo/resnet18.pt"}, $data,
 "steps": [{"fold_batch_norm": {}}, ${svd//SAVED/, \"eval_scores_path\": \"$tmp/out/spatial_svd_eval_scores.json\"}, {"export": {"encodings": false}}]}
JSON
"$worker" run --recipe "$tmp/again.json" --out "$tmp/again" > "$tmp/again.log"
"$python" - "$tmp/out/report.json" "$tmp/again/report.json" <<'PY'
import json, sys
first, again = (next(s for s in json.load(open(p))["steps"] if s["step"] == "spatial_svd")["figures"] for p in sys.argv[1:])
assert again["evaluations"] == 0 and again["reused_evaluations"] == first["evaluations"], again
assert again["macs_after"] == first["macs_after"], (again["macs_after"], first["macs_after"])
PY

# Bad input: refused at the start or failing with the reason; no artifact is left.
expect_error() {  # name, expected message, steps
  cat > "$tmp/$1.json" <<JSON
{"name": "$1", "model": {"path": "$src/zoo/resnet18.pt"}, $data, "steps": [$3, {"export": {}}]}
JSON
  if "$worker" run --recipe "$tmp/$1.json" --out "$tmp/$1" > "$tmp/$1.log" 2>&1; then
    echo "$1: the run succeeded"; exit 1
  fi
  grep -q "$2" "$tmp/$1.log" || { echo "$1: expected '$2'"; tail -5 "$tmp/$1.log"; exit 1; }
  if [ -n "$(ls -A "$tmp/$1" 2>/dev/null)" ]; then echo "$1: left files: $(ls "$tmp/$1")"; exit 1; fi
}
expect_error ratio "target_ratio must be in (0, 1\]" '{"weight_svd": {"ratios": {"target_ratio": 1.5}}}'
expect_error unknown "no layer named 'layer9.conv'" '{"channel_pruning": {"ratios": {"layer_ratios": {"layer9.conv": 0.5}, "selection": "manual"}}}'
expect_error nothing "nothing in the model can be compressed by channel_pruning" \
  '{"channel_pruning": {"ratios": {"exclude_layers": ["layer1.0.conv2", "layer1.1.conv2", "layer2.0.conv2", "layer2.1.conv2", "layer3.0.conv2", "layer3.1.conv2", "layer4.0.conv2", "layer4.1.conv2"]}}}'
expect_error order "spatial_svd must come before calibrate" '{"calibrate": {}}, {"spatial_svd": {}}'
echo "compression_test: ok"
