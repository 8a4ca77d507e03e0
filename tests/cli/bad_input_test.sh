#!/usr/bin/env bash
# Bad input to `qopt-worker run`: each case must exit non-zero with a one-line error that
# names the problem, and leave the output directory untouched.
set -u
worker=${QOPT_WORKER:?}
fx=${QOPT_FIXTURES:?}
src=${QOPT_SOURCE_DIR:?}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0

# expect NAME PATTERN -- ARGS...: runs the worker, checks rc != 0, one stderr line matching
# PATTERN, and that the output directory holds nothing new.
expect() {
  local name=$1 pattern=$2
  shift 3
  local out="$tmp/out_$name"
  mkdir -p "$out"
  echo keep > "$out/existing.txt"
  "$worker" run --quiet --out "$out" "$@" >"$tmp/stdout" 2>"$tmp/stderr"
  local rc=$?
  local lines
  lines=$(grep -c . "$tmp/stderr")
  if [ "$rc" -eq 0 ]; then
    echo "FAIL $name: exit code 0"; failures=$((failures + 1))
  elif [ "$rc" -gt 2 ]; then
    echo "FAIL $name: exit code $rc (crash?)"; cat "$tmp/stderr"; failures=$((failures + 1))
  elif [ "$lines" -ne 1 ] || ! grep -q -- "$pattern" "$tmp/stderr"; then
    echo "FAIL $name: expected one line matching '$pattern', got:"; cat "$tmp/stderr"
    failures=$((failures + 1))
  elif [ "$(ls -A "$out")" != "existing.txt" ] || [ -n "$(ls -A "$tmp" | grep partial)" ]; then
    echo "FAIL $name: output directory changed: $(ls -A "$out")"; failures=$((failures + 1))
  else
    echo "ok   $name: $(cat "$tmp/stderr")"
  fi
}

recipe=$src/examples/recipes/w8a8.json
echo '{"steps": [{"calibrate": {}}], "quantization": {"bitwidth": 8}}' > "$tmp/unknown_field.json"
sed 's/"param_bitwidth": 8/"param_bitwidth": 1/' "$recipe" > "$tmp/bits1.json"
sed 's/"activation_bitwidth": 8/"activation_bitwidth": 17/' "$recipe" > "$tmp/bits17.json"
echo '{"steps": [{"calibrate": {}}]' > "$tmp/broken.json"

expect not_torchscript "not a TorchScript model" -- --model "$fx/not_torchscript.pt" --recipe "$recipe" --data "$fx/calib.npy"
expect truncated_model "cannot load TorchScript model" -- --model "$fx/truncated.pt" --recipe "$recipe" --data "$fx/calib.npy"
expect unknown_op "aten::qopt_no_such_op" -- --model "$fx/unknown_op.pt" --recipe "$recipe" --data "$fx/calib.npy"
# An op that throws inside the interpreter: an error naming the step and the layer, not a signal.
expect throwing_op "calibration batch 1: reshape (aten::reshape): shape" -- --model "$fx/throwing.pt" --recipe "$recipe" --data "$fx/calib.npy"
# Hostile models (tests/fixtures/hostile_models.py): refused before any of their code runs.
rm -f "$fx/hostile_probe_written.pt"
expect hostile_from_file "aten::from_file, which reads a file" -- --model "$fx/hostile_from_file.pt" --recipe "$recipe" --data "$fx/calib.npy"
expect hostile_save "aten::save, which writes a file" -- --model "$fx/hostile_save.pt" --recipe "$recipe" --data "$fx/calib.npy"
expect hostile_setstate "defines __setstate__, code that TorchScript runs while loading" -- --model "$fx/hostile_setstate.pt" --recipe "$recipe" --data "$fx/calib.npy"
expect hostile_print "prim::Print, which prints" -- --model "$fx/hostile_print.pt" --recipe "$recipe" --data "$fx/calib.npy"
expect hostile_custom_op "operator qopt_probe::leak, which is not a built-in tensor operator" -- --model "$fx/hostile_custom_op.pt" --recipe "$recipe" --data "$fx/calib.npy"
expect hostile_torch_load "operator aten::load, which is not a built-in tensor operator" -- --model "$fx/hostile_load.pt" --recipe "$recipe" --data "$fx/calib.npy"
if [ -e "$fx/hostile_probe_written.pt" ]; then
  echo "FAIL hostile models: a model wrote $fx/hostile_probe_written.pt"; failures=$((failures + 1))
fi
expect missing_model "model file not found" -- --model "$fx/nope.pt" --recipe "$recipe" --data "$fx/calib.npy"
expect shape_mismatch "conv1 (aten::_convolution).*channels" -- --model "$fx/resnet18.pt" --recipe "$recipe" --data "$fx/calib_wrong_shape.npy"
expect unknown_field 'invalid recipe: quantization: unknown field "bitwidth"; allowed: param_bitwidth, activation_bitwidth, ' -- --model "$fx/resnet18.pt" --recipe "$tmp/unknown_field.json" --data "$fx/calib.npy"
expect bitwidth_1 "quantization.param_bitwidth must be in 2..16, got 1" -- --model "$fx/resnet18.pt" --recipe "$tmp/bits1.json" --data "$fx/calib.npy"
expect bitwidth_17 "quantization.activation_bitwidth must be in 2..16, got 17" -- --model "$fx/resnet18.pt" --recipe "$tmp/bits17.json" --data "$fx/calib.npy"
expect missing_data "needs calibration data" -- --model "$fx/resnet18.pt" --recipe "$recipe"
expect data_not_found "data file not found" -- --model "$fx/resnet18.pt" --recipe "$recipe" --data "$fx/nope.npy"
expect truncated_data "truncated .npy" -- --model "$fx/resnet18.pt" --recipe "$recipe" --data "$fx/calib_truncated.npy"
expect npy_64_dims "calib_dims64.npy: .npy shape (65536, 65536, .*) is not a tensor this file can hold" -- --model "$fx/resnet18.pt" --recipe "$recipe" --data "$fx/calib_dims64.npy"
expect npy_huge_dim "calib_huge.npy: .npy shape (4611686018427387904, 4) is not a tensor this file can hold" -- --model "$fx/resnet18.pt" --recipe "$recipe" --data "$fx/calib_huge.npy"
expect corrupt_data "unknown data format" -- --model "$fx/resnet18.pt" --recipe "$recipe" --data "$fx/not_torchscript.pt"
expect broken_recipe "invalid recipe" -- --model "$fx/resnet18.pt" --recipe "$tmp/broken.json" --data "$fx/calib.npy"
expect missing_recipe "recipe file not found" -- --model "$fx/resnet18.pt" --recipe "$tmp/nope.json" --data "$fx/calib.npy"

# A directory that did not exist must not be created by a failed run.
"$worker" run --quiet --out "$tmp/never" --model "$fx/truncated.pt" --recipe "$recipe" --data "$fx/calib.npy" 2>/dev/null
if [ -e "$tmp/never" ]; then echo "FAIL never: output directory created by a failed run"; failures=$((failures + 1)); fi

echo "$failures failures"
[ "$failures" -eq 0 ]
