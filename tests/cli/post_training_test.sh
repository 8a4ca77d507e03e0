#!/usr/bin/env bash
# Post-training techniques through `qopt-worker run` on the zoo's small CNN and real
# Fashion-MNIST images: batch-norm folding, cross-layer equalization with high-bias
# absorption, calibration, AdaRound (W4A8), analytical bias correction and export, then auto_quant at W2A8 with a tiny
# allowed drop so every stage runs. The reports carry each technique's figures and the
# exported model, loaded by Debian's python3-torch, holds exactly the rounded weights.
set -eu
worker=${QOPT_WORKER:?}
src=${QOPT_SOURCE_DIR:?}
python=${QOPT_PYTHON:-/usr/bin/python3}
fm=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

data='"calibration_data": {"path": "'$fm'/train-images-idx3-ubyte.gz", "max_samples": 256, "shuffle": true, "seed": 1, "batch_size": 64, "preprocess": {"mean": [0.286], "std": [0.353]}},
  "evaluation_data": {"path": "'$fm'/t10k-images-idx3-ubyte.gz", "labels_path": "'$fm'/t10k-labels-idx1-ubyte.gz", "max_samples": 1000, "batch_size": 500, "preprocess": {"mean": [0.286], "std": [0.353]}},
  "quantization": {"param_bitwidth": 4, "activation_bitwidth": 8, "per_channel": true}'
cat > "$tmp/flow.json" <<JSON
{"name": "flow", "model": {"path": "$src/zoo/small_cnn.pt"}, $data,
 "steps": [{"fold_batch_norm": {}}, {"cross_layer_equalization": {}}, {"calibrate": {}}, {"evaluate": {}},
           {"adaround": {"num_iterations": 300}}, {"evaluate": {}},
           {"bias_correction": {"mode": "analytical", "skip_layers": ["fc2"]}}, {"evaluate": {}}, {"export": {}}]}
JSON
"$worker" run --recipe "$tmp/flow.json" --out "$tmp/flow" > "$tmp/flow.log"
grep -q "adaround.*iteration 300/300" "$tmp/flow.log" || { echo "no AdaRound progress"; tail "$tmp/flow.log"; exit 1; }
"$python" - "$tmp/flow" "$src/zoo/small_cnn.pt" <<'PY'
import json, sys
import torch
out = sys.argv[1]
report = json.load(open(out + "/report.json"))
# This job's peak resident memory: a worker with LibTorch loaded is well above 50 MiB.
assert 50 < report["peak_memory_mib"] < 64 * 1024, report["peak_memory_mib"]
steps = {s["step"]: s for s in report["steps"]}
cle = steps["cross_layer_equalization"]["details"]
assert cle["chains"] == [["conv1", "conv2"], ["fc1", "fc2"]], cle["chains"]
layers = steps["adaround"]["layers"]
assert [l["layer"] for l in layers] == ["conv1", "conv2", "fc1", "fc2"], layers
assert sum(l["figures"]["adaround_error"] for l in layers) < sum(l["figures"]["nearest_error"] for l in layers), layers
# Each layer says where it stopped and why: a 300-iteration ceiling is below the default
# 2 000-iteration annealing, so every layer runs to it.
for l in layers:
    f, labels = l["figures"], l["labels"]
    assert f["max_iterations"] == 300 and f["iterations"] == 300, l
    assert labels["stop"] == "ceiling" and labels["stop_reason"].startswith("ceiling reached after 300 iterations"), l
    assert 0 <= f["hard_fraction"] <= 1, l
assert steps["adaround"]["figures"]["iterations"] == 4 * 300, steps["adaround"]["figures"]
evals = [s["figures"] for s in report["steps"] if s["step"] == "evaluate"]
assert evals[1]["output_sqnr_db"] > evals[0]["output_sqnr_db"], (evals[0]["output_sqnr_db"], evals[1]["output_sqnr_db"])
assert all(abs(e["fp32_top1"] - evals[0]["fp32_top1"]) < 1e-9 for e in evals), "the float model must not change"
bc = steps["bias_correction"]["layers"]
assert [l["layer"] for l in bc] == ["conv1", "conv2", "fc1"], bc
# Analytical correction needs batch-norm statistics straight before a layer; here pooling
# or flattening sits between, so every layer falls back to the empirical method.
assert [l["labels"]["method"] for l in bc] == ["empirical"] * 3, bc
# Each AdaRound layer's curve: its reconstruction error over the 300 iterations.
ada = steps["adaround"]
curves = {c["name"]: c for c in ada["series"]}
assert sorted(curves) == sorted(l["layer"] + " reconstruction error" for l in ada["layers"]), list(curves)
for c in curves.values():
    assert c["x"][0] == 1 and c["x"][-1] == 300 and c["x"] == sorted(c["x"]) and 10 <= len(c["x"]) <= 51, c["x"]
    assert len(c["y"]) == len(c["x"]) and all(0 <= y < float("inf") for y in c["y"]), c
# The float model's cost for one 1x1x28x28 input, against hand counts: conv1 16x28x28
# outputs x 1x3x3, conv2 32x14x14 x 16x3x3, fc1 64x1568, fc2 10x64; parameters as PyTorch
# counts them.
cost = report["cost"]
assert [int(d) for d in cost["input_shape"]] == [1, 1, 28, 28], cost["input_shape"]
macs = {l["layer"]: l["figures"]["macs"] for l in cost["layers"]}
hand = {"conv1": 16 * 28 * 28 * 9, "conv2": 32 * 14 * 14 * 16 * 9, "fc1": 64 * 1568, "fc2": 10 * 64}
assert {k: v for k, v in macs.items() if v} == hand, macs
assert cost["macs"] == sum(hand.values()), cost["macs"]
float_params = sum(p.numel() for p in torch.jit.load(sys.argv[2]).parameters())
assert cost["parameters"] == float_params == 105914, (cost["parameters"], float_params)
# The exported weights are the rounded ones: on the 4-bit grid of their encodings.
model = torch.jit.load(out + "/model.pt")
enc = json.load(open(out + "/model.encodings"))["param_encodings"]
params = dict(model.named_parameters())
for name in ("conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"):
    w = params[name].detach()
    e = enc[name]
    scale = torch.tensor([c["scale"] for c in e]).reshape(-1, *([1] * (w.dim() - 1)))
    offset = torch.tensor([float(c["offset"]) for c in e]).reshape(scale.shape)
    q = w / scale - offset
    assert (q - q.round()).abs().max() < 1e-3, (name, (q - q.round()).abs().max())
    assert q.round().min() >= 0 and q.round().max() <= 15, name
print("ok   flow: SQNR %.2f -> %.2f dB after AdaRound -> %.2f dB after bias correction; top1 %.4f -> %.4f -> %.4f (fp32 %.4f)" % (
    evals[0]["output_sqnr_db"], evals[1]["output_sqnr_db"], evals[2]["output_sqnr_db"],
    evals[0]["top1"], evals[1]["top1"], evals[2]["top1"], evals[1]["fp32_top1"]))
PY

# 2-bit weights: far from the float model, so no stage is within the (tiny) allowed drop.
cat > "$tmp/auto.json" <<JSON
{"name": "auto", "model": {"path": "$src/zoo/small_cnn.pt"}, ${data/\"param_bitwidth\": 4/\"param_bitwidth\": 2},
 "steps": [{"auto_quant": {"allowed_drop": 1e-9, "adaround": {"num_iterations": 100}}}, {"evaluate": {}}, {"export": {}}]}
JSON
"$worker" run --recipe "$tmp/auto.json" --out "$tmp/auto" > "$tmp/auto.log"
"$python" - "$tmp/auto" <<'PY'
import json, sys
report = json.load(open(sys.argv[1] + "/report.json"))
aq = report["steps"][0]["details"]
names = [s["stage"] for s in aq["stages"]]
assert len(names) == 3 and names[-1].endswith("+adaround"), names
assert aq["kept"] in names, aq
best = min(aq["stages"], key=lambda s: s["drop"])
assert aq["kept"] == best["stage"] or aq["kept"] == names[-1], aq
final = report["steps"][1]["figures"]
kept = [s for s in aq["stages"] if s["stage"] == aq["kept"]][0]
assert abs(final["top1"] - kept["top1"]) < 1e-9, (final["top1"], kept["top1"])
print("ok   auto_quant: " + ", ".join("%s drop %.4f" % (s["stage"], s["drop"]) for s in aq["stages"]) + "; kept " + aq["kept"])
PY
