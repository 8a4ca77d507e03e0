#!/usr/bin/env bash
# Builds qopt, makes the traced torchvision ResNet18 and MobileNetV2 fixtures and runs
# engine_bench on each (batch 16, 3x224x224, all cores): FP32, W8A8 simulated and one SQNR
# calibration batch side by side, then a per-op profile of each.
#
#   bench/run_engine_bench.sh            print the figures
#   RECORD=1 bench/run_engine_bench.sh   also put them in bench/results/speed.json (rows
#                                        {"benchmark": "engine", "model": ...}) and the
#                                        profiles in bench/results/engine_profile.md
# Extra arguments go to engine_bench (e.g. --runs 11).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${QOPT_BUILD_DIR:-$root/build}
QOPT_BUILD_TARGETS="engine_bench" bash "$root/scripts/build.sh" >/dev/null
models=$build/bench/models
[ -s "$models/resnet18.pt" ] && [ -s "$models/mobilenet_v2.pt" ] ||
  /usr/bin/python3 "$root/tests/fixtures/make_fixtures.py" "$models"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for model in resnet18 mobilenet_v2; do
  "$build/bench/engine_bench" "$models/$model.pt" --batch 16 --size 224 --runs "${RUNS:-7}" \
    --json "$work/$model.json" --profile "$work/$model.md" "$@"
  cat "$work/$model.md"
  echo
done
[ "${RECORD:-0}" = 1 ] || exit 0
/usr/bin/python3 - "$root/bench/results/speed.json" "$work"/resnet18.json "$work"/mobilenet_v2.json <<'PY'
import datetime, json, sys
path, fresh = sys.argv[1], [json.load(open(p)) for p in sys.argv[2:]]
for row in fresh:
    row["date"] = datetime.date.today().isoformat()
rows = json.load(open(path))
keep = [r for r in rows if not (r.get("benchmark") == "engine" and r["model"] in {f["model"] for f in fresh})]
json.dump(keep + fresh, open(path, "w"), indent=1)
print("speed.json: engine rows for", ", ".join(f["model"] for f in fresh))
PY
{
  echo "# Engine per-op profile"
  echo
  echo "Written by \`RECORD=1 bench/run_engine_bench.sh\` on $(date -u +%F), $(nproc) cores,"
  echo "batch 16, 3x224x224; the ratios of the same run are in \`speed.json\` (benchmark \"engine\")."
  echo
  cat "$work/resnet18.md"
  echo
  cat "$work/mobilenet_v2.md"
} > "$root/bench/results/engine_profile.md"
