#!/usr/bin/env bash
# The Python client (client/python, qopt_client) against a real qopt-server on loopback
# with two tenants: the ML-pipeline example end to end, then the client's calls one by
# one (records, tenants, tokens, hash mismatch, resumed upload, jobs, cancel, download,
# listings by state and name, download_all, the report's keys as the README lists them),
# then gRPC health checking and reflection.
#
#   python_client_test.sh SERVER_BIN PYTHON_DIR
# SERVER_BIN: qopt-server (finds qopt-worker next to it or in ../worker); PYTHON_DIR: the
# build's python/ folder (stubs + qopt_client, from the qopt_python target).
set -u
server_bin=${1:-${QOPT_SERVER_BIN:-}}
pydir=${2:-}
if [ -z "$server_bin" ] || [ -z "$pydir" ]; then
  echo "usage: $0 SERVER_BIN PYTHON_DIR"; exit 2
fi
src=${QOPT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
python=${QOPT_PYTHON:-/usr/bin/python3}
fmnist=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d)
server_pid=""
failures=0

cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() { echo "FAIL $*"; failures=$((failures + 1)); }

export PYTHONPATH=$pydir${PYTHONPATH:+:$PYTHONPATH}
"$python" -c "import qopt_client" || { echo "FAIL qopt_client does not import from $pydir"; exit 1; }

source "$src/scripts/qopt_server.sh"
cat > "$tmp/auth.json" <<'JSON'
{"tenants": {"token-a": "team-a", "token-b": "team-b"}, "worker_tokens": ["token-w"]}
JSON
start_qopt_server "$server_bin" "$tmp/server.log" --listen 127.0.0.1:0 --data-dir "$tmp/data" \
  --local-workers 1 --auth-file "$tmp/auth.json" || exit 1
server_pid=$QOPT_SERVER_PID

# 1. The pipeline example as tenant A: records by name, a W8A8 job on a few hundred
#    samples, artifacts downloaded, accuracy printed.
QOPT_TOKEN=token-a "$python" "$src/examples/python/pipeline.py" --server "$QOPT_SERVER" \
  --model "$src/zoo/small_cnn.pt" --model-name small_cnn \
  --data "$fmnist/train-images-idx3-ubyte.gz" --labels "$fmnist/train-labels-idx1-ubyte.gz" \
  --eval-data "$fmnist/t10k-images-idx3-ubyte.gz" --eval-labels "$fmnist/t10k-labels-idx1-ubyte.gz" \
  --calib-samples 256 --eval-samples 500 --out "$tmp/out" > "$tmp/pipeline.log" 2>&1
rc=$?
[ $rc -eq 0 ] || fail "pipeline.py exit $rc: $(tail -5 "$tmp/pipeline.log")"
for f in model.pt model.encodings report.json; do
  [ -s "$tmp/out/$f" ] || fail "pipeline.py left no $f in --out"
done
"$python" - "$tmp/pipeline.log" <<'PY' || fail "pipeline accuracy: $(grep top-1 "$tmp/pipeline.log")"
import re, sys
text = open(sys.argv[1]).read()
m = re.search(r"FP32 top-1 ([0-9.]+), W8A8 top-1 ([0-9.]+)", text)
assert m, "no accuracy line"
fp32, w8a8 = float(m.group(1)), float(m.group(2))
assert 0.8 < w8a8 <= 1 and abs(w8a8 - fp32) < 0.03, (fp32, w8a8)
print("ok   pipeline.py: W8A8 top-1 %.4f (FP32 %.4f), artifacts downloaded" % (w8a8, fp32))
PY

# A model the engine cannot load: the job fails and so does the pipeline step (exit 3).
head -c 4096 /dev/urandom > "$tmp/not_torchscript.pt"
QOPT_TOKEN=token-a "$python" "$src/examples/python/pipeline.py" --model "$tmp/not_torchscript.pt" \
  --data "$fmnist/t10k-images-idx3-ubyte.gz" --calib-samples 64 --eval-samples 64 \
  --out "$tmp/out-bad" > "$tmp/pipeline-bad.log" 2>&1
rc=$?
if [ $rc -ne 3 ] || ! grep -q "failed:" "$tmp/pipeline-bad.log"; then
  fail "pipeline.py with a corrupt model: exit $rc, $(tail -2 "$tmp/pipeline-bad.log")"
elif [ -e "$tmp/out-bad" ]; then
  fail "pipeline.py made --out for a failed job"
else
  echo "ok   pipeline.py with a corrupt model: exit 3, $(grep "failed:" "$tmp/pipeline-bad.log")"
fi

# 2. The client's calls, tenant by tenant.
"$python" - "$src" "$tmp" <<'PY' || fail "client checks"
import hashlib, os, re, sys
import grpc
from qopt_client import Client, QoptError, service_pb2, state_name
from qopt.v1 import service_pb2_grpc

src, tmp = sys.argv[1], sys.argv[2]
fmnist = "/usr/share/datasets/fashion-mnist"
failures = 0

def check(what, condition, detail=""):
    global failures
    print(("ok   " if condition else "FAIL ") + what + (f": {detail}" if detail and not condition else ""))
    failures += 0 if condition else 1

def error_code(call):
    try:
        call()
    except QoptError as e:
        return e.code
    return "OK"

a, b = Client(token="token-a"), Client(token="token-b")

# Records are per tenant.
check("tenant A sees its model", a.get_model("small_cnn").sha256 == a.upload(f"{src}/zoo/small_cnn.pt"))
check("tenant A lists its data sets",
      {"train-images-idx3-ubyte", "t10k-images-idx3-ubyte"} <= {d.name for d in a.list_datasets()})
code = error_code(lambda: b.get_model("small_cnn"))
check("tenant B cannot see tenant A's model (NOT_FOUND)", code == "NOT_FOUND", code)
check("tenant B lists no models", b.list_models() == [], b.list_models())
jobs = a.list_jobs(state="SUCCEEDED")
check("tenant A lists its SUCCEEDED job", len(jobs) == 1, jobs)
job_id = jobs[0].id if jobs else "none"
code = error_code(lambda: b.get(job_id))
check("tenant B cannot see tenant A's job (NOT_FOUND)", code == "NOT_FOUND", code)

# Tokens.
for name, token in (("wrong", "wrong"), ("no", "")):
    code = error_code(Client(token=token).list_jobs)
    check(f"{name} token is UNAUTHENTICATED", code == "UNAUTHENTICATED", code)

# Unknown ids.
for call in ("get", "report", "cancel", "wait"):
    code = error_code(lambda: getattr(a, call)("job-does-not-exist"))
    check(f"{call} of an unknown job is NOT_FOUND", code == "NOT_FOUND", code)

# Bytes that do not match the declared sha256, sent with the raw stub.
blobs = service_pb2_grpc.BlobServiceStub(a.channel)
payload = os.urandom(1000)
header = service_pb2.UploadHeader(sha256=hashlib.sha256(b"something else").hexdigest(), size=len(payload))
try:
    blobs.Upload(iter([service_pb2.UploadRequest(header=header), service_pb2.UploadRequest(chunk=payload)]),
                 metadata=a.metadata, timeout=30)
    code = "OK"
except grpc.RpcError as e:
    code = e.code().name
check("upload with a mismatching sha256 is INVALID_ARGUMENT", code == "INVALID_ARGUMENT", code)

# An upload broken off halfway resumes at the committed offset.
path = os.path.join(tmp, "resume.bin")
data = os.urandom(3 * (1 << 20) + 12345)
with open(path, "wb") as f:
    f.write(data)
sha, half = hashlib.sha256(data).hexdigest(), 3 << 19
first = [service_pb2.UploadRequest(header=service_pb2.UploadHeader(sha256=sha, size=len(data)))]
first += [service_pb2.UploadRequest(chunk=data[i:min(i + (1 << 20), half)]) for i in range(0, half, 1 << 20)]
try:
    blobs.Upload(iter(first), metadata=a.metadata, timeout=30)
except grpc.RpcError:
    pass  # "upload ended at ... bytes": the part stays on the server for resuming
status = blobs.GetUploadStatus(service_pb2.GetUploadStatusRequest(sha256=sha), metadata=a.metadata)
check("half an upload is committed", status.committed_offset == half and not status.complete, status)
progress = []
uploaded = a.upload(path, on_progress=lambda done, total: progress.append(done))
check("upload resumes from the committed offset", progress[:1] == [half], progress[:3])
check("resumed upload has the file's sha256", uploaded == sha, uploaded)
status = blobs.GetUploadStatus(service_pb2.GetUploadStatusRequest(sha256=sha), metadata=a.metadata)
check("resumed upload is complete", status.complete and status.committed_offset == len(data), status)
progress.clear()
a.upload(path, on_progress=lambda done, total: progress.append(done))
check("a second upload of the same file sends nothing", progress == [len(data)], progress)
check("usage counts the uploads", a.usage().used_bytes >= len(data), a.usage())

# Every file field of a recipe is uploaded, each file once; sha256s and names stay.
from qopt_client import recipes
fields = {"model": {"path": "resume.bin"},
          "calibration_data": {"path": "resume.bin", "labels_path": sha, "name": "kept"},
          "evaluation_data": {"path": "resume.bin", "labels_path": "resume.bin"},
          "quantization": {"config_path": "resume.bin", "freeze_encodings_path": "resume.bin"}}
message, sent = recipes.to_recipe(fields), []
recipes.replace_local_files(message, tmp, lambda p: sent.append(p) or "f" * 64)
values = {label: getattr(m, f) for label, m, f in recipes.file_fields(message)}
expected = {label: "f" * 64 for label in (
    "model.path", "calibration_data.path", "evaluation_data.path", "evaluation_data.labels_path",
    "quantization.config_path", "quantization.freeze_encodings_path")}
expected["calibration_data.labels_path"] = sha
check("recipe files: all seven fields replaced, the file uploaded once",
      values == expected and sent == [path] and message.calibration_data.name == "kept", (values, sent))

# Local files in a recipe dict are uploaded; unknown fields are errors before any call.
preprocess = {"mean": [0.2860], "std": [0.3530]}
recipe = {
    "name": "client-test", "model": {"path": "../../zoo/small_cnn.pt"},
    "calibration_data": {"path": f"{fmnist}/t10k-images-idx3-ubyte.gz", "max_samples": 64,
                         "batch_size": 32, "preprocess": preprocess},
    "evaluation_data": {"path": f"{fmnist}/t10k-images-idx3-ubyte.gz", "preprocess": preprocess,
                        "labels_path": f"{fmnist}/t10k-labels-idx1-ubyte.gz", "max_samples": 200, "batch_size": 100},
    "steps": [{"calibrate": {}}, {"evaluate": {}}, {"analyze": {"num_batches": 1, "activation_samples": 32}},
              {"export": {"encodings": True}}],
}
code = error_code(lambda: a.submit(dict(recipe, modle={})))
check("a recipe with an unknown field is INVALID_ARGUMENT", code == "INVALID_ARGUMENT", code)
code = error_code(lambda: a.submit(recipe, base_dir=tmp))
check("a recipe naming a missing file is INVALID_ARGUMENT", code == "INVALID_ARGUMENT", code)
job = a.submit(recipe, base_dir=f"{src}/examples/recipes", request_id="client-test-1")
check("resubmitting a request_id returns the first job",
      a.submit(recipe, base_dir=f"{src}/examples/recipes", request_id="client-test-1").id == job.id)
queued = a.submit(recipe, base_dir=f"{src}/examples/recipes")
cancelled = a.cancel(queued.id)
check("cancel", cancelled.state == service_pb2.CANCELLED, state_name(cancelled.state))
events = []
done = a.wait(job.id, on_event=events.append)
check("wait returns the finished job", done.state == service_pb2.SUCCEEDED, f"{state_name(done.state)} {done.error}")
check("wait saw every event once, in order",
      [e.sequence for e in events] == sorted({e.sequence for e in events}) and events[-1].state == service_pb2.SUCCEEDED)
finished = [e.step_report for e in events if e.HasField("step_report")]
check("each step's report arrives as it finishes",
      [(s.index, s.step) for s in finished] == [(1, "calibrate"), (2, "evaluate"), (3, "analyze"), (4, "export")]
      and 0.8 < finished[1].figures["top1"] <= 1 and "model.encodings" in finished[3].artifacts, finished)
# The analysis streams each group's row, typed, before its step's report arrives.
rows = [(e.sequence, e.layer_row) for e in events if e.HasField("layer_row")]
analyzed = next(e for e in events if e.HasField("step_report") and e.step_report.step == "analyze")
check("analysis rows arrive typed, one per group, before the step's report",
      [r.layer for _, r in rows] == [l.layer for l in analyzed.step_report.layers]
      and all(seq < analyzed.sequence for seq, _ in rows) and "only_enabled" in rows[-1][1].figures,
      [r.layer for _, r in rows])
check("the client's rows() gives the same rows",
      [r.layer for _, r in a.rows(job.id)] == [r.layer for _, r in rows])
resumed = list(a.watch(job.id, after=events[-2].sequence))
check("watch resumes after a sequence", [e.sequence for e in resumed] == [events[-1].sequence], resumed)
report = a.report(job.id)
check("report has the evaluate metrics", 0.8 < report["metrics"].get("top1", 0) <= 1, report.get("metrics"))
html = a.download(job.id, "report.html", tmp)
check("report.html downloads", "step-3-sensitivity" in open(html).read(), html)
got = a.download(job.id, "model.encodings", tmp)
check("download into a folder", os.path.basename(got) == "model.encodings" and os.path.getsize(got) > 0, got)
# A download that does not match the job's artifact entry leaves no file behind.
real_get = a.get
def tampered_get(job_id):
    job = real_get(job_id)
    for artifact in job.artifacts:
        artifact.sha256 = "0" * 64
    return job
a.get = tampered_get
code = error_code(lambda: a.download(job.id, "report.json", os.path.join(tmp, "tampered.json")))
a.get = real_get
check("a download that does not match its sha256 is DATA_LOSS, without a file",
      code == "DATA_LOSS" and not [f for f in os.listdir(tmp) if f.startswith("tampered")], code)
code = error_code(lambda: a.download(job.id, "no-such-artifact", tmp))
check("download of a missing artifact is NOT_FOUND", code == "NOT_FOUND", code)
# The report's keys are those client/python/README.md lists.
step_keys = {"step", "index", "seconds", "figures", "layers", "series", "artifacts"}
check("the report has the keys the README lists",
      set(report) - {"peak_memory_mib"} ==
      {"recipe", "model", "device", "steps", "metrics", "cost", "model_sha256", "datasets", "qopt_version", "worker_id",
       "started_unix_ms", "finished_unix_ms", "wall_seconds", "quantization", "warnings"}
      and all(step_keys <= set(s) <= step_keys | {"details"} for s in report["steps"])
      and set(report["metrics"]) == {"fp32_top1", "top1", "fp32_top5", "top5", "output_sqnr_db", "top1_agreement",
                                     "mean_kl", "eval_samples", "float_seconds", "simulated_seconds"}
      and set(report["cost"]) == {"input_shape", "macs", "parameters", "parameter_bytes", "activation_bytes", "layers"},
      (sorted(report), sorted(report["metrics"]), sorted(report["cost"])))

# The header: the model as uploaded, the worker, the version, the times and the settings used.
quantization = report["quantization"]
check("the report's header names the model, its blob, the data, the worker and the settings used",
      "/" not in report["model"] and re.fullmatch("[0-9a-f]{64}", report["model_sha256"])
      and [d["role"] for d in report["datasets"]][:1] == ["calibration_data"]
      and report["worker_id"] and report["qopt_version"].startswith("0.1.0+")
      and int(report["started_unix_ms"]) <= int(report["finished_unix_ms"]) and report["wall_seconds"] > 0
      and quantization["param_bitwidth"] == 8 and quantization["activation_calibration"]
      and quantization["quantizers"] and all(q["bitwidth"] == 8 for q in quantization["quantizers"]),
      {k: report[k] for k in ("model", "model_sha256", "datasets", "worker_id", "qopt_version", "wall_seconds")})

# Listings (issue 16): what each job did and how it went, filtered by state and name.
listed = {j.id: j for j in a.list_jobs(state=["succeeded", service_pb2.FAILED])}
failed = [j for j in listed.values() if j.state == service_pb2.FAILED]
check("list_jobs by several states: both SUCCEEDED jobs and the FAILED one",
      len(listed) == 3 and job.id in listed and len(failed) == 1, [(i, state_name(j.state)) for i, j in listed.items()])
if job.id in listed:
    mine = listed[job.id]
    check("a listed job carries its technique, times and the report's top-1",
          mine.technique == "calibrate+analyze" and mine.created_unix_ms <= mine.started_unix_ms <= mine.updated_unix_ms
          and mine.metrics["top1"] == report["metrics"]["top1"]
          and mine.metrics["fp32_top1"] == report["metrics"]["fp32_top1"], mine)
    print("ok   listed: %s %s %s top-1 %.1f -> %.1f in %.1f s" % (
        mine.id, mine.recipe.name, mine.technique, 100 * mine.metrics["fp32_top1"], 100 * mine.metrics["top1"],
        (mine.updated_unix_ms - mine.started_unix_ms) / 1000))
if failed:
    check("a failed job shows its failure and error, not the stage it failed in",
          failed[0].stage == "failed" and "not a TorchScript model" in failed[0].error and not failed[0].metrics,
          (failed[0].stage, failed[0].error))
check("list_jobs by name ignores case",
      {j.id for j in a.list_jobs(name="CLIENT-test")} == {job.id, queued.id}, [j.id for j in a.list_jobs(name="CLIENT-test")])
check("list_jobs by state and name",
      [j.id for j in a.list_jobs(state="CANCELLED", name="client")] == [queued.id])
code = error_code(lambda: a.list_jobs(state=["SUCCEEDED", "DONE"]))
check("list_jobs with an unknown state is INVALID_ARGUMENT", code == "INVALID_ARGUMENT", code)

# Every artifact at once, each the same bytes as its single download.
everything = a.download_all(job.id, os.path.join(tmp, "all", "nested"))
singles = [a.download(job.id, art.name, os.path.join(tmp, "single-" + art.name)) for art in done.artifacts]
check("download_all fetches every artifact, as single downloads do",
      [os.path.basename(p) for p in everything] == [art.name for art in done.artifacts]
      and sorted(os.listdir(os.path.join(tmp, "all", "nested"))) == sorted(art.name for art in done.artifacts)
      and all(open(x, "rb").read() == open(y, "rb").read() for x, y in zip(everything, singles)), everything)
for empty in [j.id for j in failed] + [queued.id]:
    try:
        a.download_all(empty, os.path.join(tmp, "none"))
        code, message = "OK", ""
    except QoptError as e:
        code, message = e.code, e.message
    check("download_all of a job without artifacts is FAILED_PRECONDITION, without a folder: " + message,
          code == "FAILED_PRECONDITION" and "has no artifacts" in message and not os.path.exists(os.path.join(tmp, "none")),
          (code, message))
running = a.submit(recipe, base_dir=f"{src}/examples/recipes")
code = error_code(lambda: a.download_all(running.id, os.path.join(tmp, "unfinished")))
check("download_all of a job that has not finished is FAILED_PRECONDITION",
      code == "FAILED_PRECONDITION" and not os.path.exists(os.path.join(tmp, "unfinished")), code)
a.cancel(running.id)
a.wait(running.id)
a.delete_job(running.id)

import qopt_client.client
qopt_client.client._PAGE_SIZE = 3  # four jobs: two pages
check("list_jobs pages through every job", len(a.list_jobs()) == 4, [j.id for j in a.list_jobs()])
a.delete_job(queued.id)
code = error_code(lambda: a.get(queued.id))
check("a deleted job is gone", code == "NOT_FOUND", code)

# Records: replace, delete.
code = error_code(lambda: a.create_model("small_cnn", sha))
check("an existing name without replace is ALREADY_EXISTS", code == "ALREADY_EXISTS", code)
check("replace=True updates the record", a.create_model("small_cnn", sha, replace=True).sha256 == sha)
a.delete_model("small_cnn")
code = error_code(lambda: a.get_model("small_cnn"))
check("a deleted model is gone", code == "NOT_FOUND", code)
sys.exit(1 if failures else 0)
PY

# 2b. ONNX export: model.onnx and its encodings downloaded by the client run in ONNX
#     Runtime with the TorchScript simulation's top class.
QOPT_TOKEN=token-a "$python" - "$src/examples/recipes/fashion_mnist_w8a8_onnx.json" "$tmp/onnx" <<'PY' || fail "ONNX job through the Python client"
import sys
from qopt_client import Client, service_pb2, state_name

recipe, out = sys.argv[1], sys.argv[2]
with Client() as qopt:
    job = qopt.wait(qopt.submit(recipe).id)
    if job.state != service_pb2.SUCCEEDED:
        sys.exit(f"ONNX job {job.id} is {state_name(job.state)}: {job.error}")
    for name in ("model.onnx", "model.onnx.encodings", "model.pt"):
        qopt.download(job.id, name, out + "/")
PY
[ -s "$tmp/onnx/model.pt" ] &&
  { "$python" "$src/tests/service/check_downloaded_onnx.py" "$tmp/onnx" "Client.download" || fail "downloaded ONNX model"; }

# 3. Standard gRPC services: health checking and reflection.
"$python" "$src/tests/service/health_reflection_test.py" --server "$QOPT_SERVER" || fail "health / reflection"

echo "$failures failed"
[ "$failures" -eq 0 ]
