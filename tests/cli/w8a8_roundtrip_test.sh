#!/usr/bin/env bash
# `qopt-worker run` with the example recipes on every fixture, with both data formats:
# progress lines, artifacts, and the exported model loaded by Debian's python3-torch.
set -eu
worker=${QOPT_WORKER:?}
fx=${QOPT_FIXTURES:?}
src=${QOPT_SOURCE_DIR:?}
python=${QOPT_PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# shufflenet_v2 computes its channel shuffle with integer tensors; control_flow has a
# data-dependent branch and loop.
for model in resnet18 mobilenet_v2 googlenet small_scripted shufflenet_v2 control_flow; do
  for recipe in w8a8 w8a8_per_tensor; do
    data=$fx/calib.npy
    [ "$recipe" = w8a8_per_tensor ] && data=$fx/calib.pt
    out=$tmp/$model-$recipe
    "$worker" run --model "$fx/$model.pt" --recipe "$src/examples/recipes/$recipe.json" \
      --data "$data" --out "$out" > "$tmp/log"
    grep -q "calibrate.*100%" "$tmp/log" || { echo "no calibration progress for $model"; cat "$tmp/log"; exit 1; }
    for f in model.pt model.encodings report.json; do
      [ -s "$out/$f" ] || { echo "missing $out/$f"; exit 1; }
    done
    "$python" - "$out" "$fx/calib.npy" <<'PY'
import json, sys
import numpy as np
import torch
out, data = sys.argv[1], sys.argv[2]
model = torch.jit.load(out + "/model.pt")
x = torch.from_numpy(np.load(data)[:4])
with torch.no_grad():
    y = model(x)
assert y.shape[0] == 4 and torch.isfinite(y).all(), y
enc = json.load(open(out + "/model.encodings"))
assert enc["version"] == "0.6.1"
params = dict(model.named_parameters())
missing = [k for k in enc["param_encodings"] if k not in params]
assert not missing, missing
report = json.load(open(out + "/report.json"))
assert report["metrics"]["output_sqnr_db"] > 0, report
PY
    echo "ok $model $recipe: $(grep output_sqnr_db "$tmp/log")"
  done
done
