"""Issue 11, point 5 and its neighbours: the worker token alone only leases; each lease
has its own token that reads only the job's inputs (and checkpoint), attaches only
artifacts and checkpoints whose bytes it sends (size, sha256, plain name), and reports only
on its own lease. Also: requests that do
not parse are INVALID_ARGUMENT, recipes that cannot succeed are refused at submit, clients
refuse artifact names with separators, and an open server stays on loopback."""
import hashlib
import os
import subprocess

import grpc

from service_harness import Server, check, code_of, finish, md, service_pb2
from qopt.v1 import recipe_pb2

src = os.environ["QOPT_SOURCE_DIR"]
model_path = os.path.join(src, "zoo", "small_cnn.pt")
server = Server()
try:
    a = server.client("token-a")
    b = server.client("token-b")
    model = a.upload(model_path)
    data_file = os.path.join(server.dir, "data.bin")
    with open(data_file, "wb") as f:
        f.write(os.urandom(4096))
    data = a.upload(data_file)
    secret_file = os.path.join(server.dir, "secret.bin")
    secret_bytes = b"team-b's secret " * 64
    with open(secret_file, "wb") as f:
        f.write(secret_bytes)
    secret = b.upload(secret_file)
    recipe = {"model": {"path": model}, "calibration_data": {"path": data},
              "steps": [{"fold_batch_norm": {}}, {"export": {"torchscript": True}}]}
    job1, job2 = a.submit(recipe).id, a.submit(recipe).id
    w = server.workers

    # The worker token alone: Lease only.
    for name, call, request in [
            ("ReadBlob", w.ReadBlob, service_pb2.ReadBlobRequest(sha256=model)),
            ("Heartbeat", w.Heartbeat, service_pb2.HeartbeatRequest(job_id=job1)),
            ("Complete", w.Complete, service_pb2.CompleteRequest(job_id=job1)),
            ("Fail", w.Fail, service_pb2.FailRequest(job_id=job1, error="x"))]:
        code, details = code_of(call, request, metadata=md("token-w"))
        check(code == grpc.StatusCode.UNAUTHENTICATED, f"{name} with the worker token only: {code} {details}")
    def put_checkpoint(lease, data, metadata, sha=None):
        def messages():
            yield service_pb2.PutCheckpointRequest(
                job_id=lease.job_id, lease_id=lease.lease_id,
                header=service_pb2.CheckpointHeader(sha256=sha or hashlib.sha256(data).hexdigest(), size=len(data)))
            yield service_pb2.PutCheckpointRequest(chunk=data)
        return code_of(w.PutCheckpoint, messages(), metadata=metadata)

    code, details = put_checkpoint(service_pb2.LeaseResponse(job_id=job1), b"ckpt", md("token-w"))
    check(code == grpc.StatusCode.UNAUTHENTICATED, f"PutCheckpoint with the worker token only: {code} {details}")
    code, _ = code_of(w.Lease, service_pb2.LeaseRequest(worker_id="w", wait_ms=0), metadata=md("token-a"))
    check(code == grpc.StatusCode.UNAUTHENTICATED, f"a tenant token cannot lease: {code}")

    lease1 = w.Lease(service_pb2.LeaseRequest(worker_id="w1", devices=["cpu"], wait_ms=2000), metadata=md("token-w"))
    lease2 = w.Lease(service_pb2.LeaseRequest(worker_id="w2", devices=["cpu"], wait_ms=2000), metadata=md("token-w"))
    check({lease1.job_id, lease2.job_id} == {job1, job2}, "both jobs leased")
    check(len(lease1.lease_token) == 64 and lease1.lease_token != lease2.lease_token
          and lease1.lease_token != lease1.lease_id, "each lease has its own 256-bit token")
    t1, t2 = md("token-w", lease1.lease_token), md("token-w", lease2.lease_token)

    # Reads: the job's inputs only.
    got = b"".join(c.data for c in w.ReadBlob(service_pb2.ReadBlobRequest(sha256=model), metadata=t1))
    check(hashlib.sha256(got).hexdigest() == model, "the lease reads its job's model")
    code, details = code_of(w.ReadBlob, service_pb2.ReadBlobRequest(sha256=secret), metadata=t1)
    check(code == grpc.StatusCode.PERMISSION_DENIED, f"another tenant's blob: {code} {details}")
    code, _ = code_of(w.ReadBlob, service_pb2.ReadBlobRequest(sha256="../../etc/passwd"), metadata=t1)
    check(code == grpc.StatusCode.INVALID_ARGUMENT, f"a non-hash blob name: {code}")
    code, _ = code_of(w.ReadBlob, service_pb2.ReadBlobRequest(sha256=model), metadata=md("token-w", "f" * 64))
    check(code == grpc.StatusCode.UNAUTHENTICATED, f"a made-up lease token: {code}")

    # Reports: its own lease only.
    code, details = code_of(w.Complete, service_pb2.CompleteRequest(
        job_id=lease2.job_id, lease_id=lease2.lease_id, report_json="{}"), metadata=t1)
    check(code == grpc.StatusCode.PERMISSION_DENIED, f"completing another lease: {code} {details}")
    code, _ = code_of(w.Fail, service_pb2.FailRequest(
        job_id=lease2.job_id, lease_id=lease2.lease_id, error="x"), metadata=t1)
    check(code == grpc.StatusCode.PERMISSION_DENIED, f"failing another lease: {code}")

    # Artifacts: only bytes this call sends, checked against the header.
    def put(name, sha, size, chunks, metadata=t1, lease=lease1):
        def messages():
            yield service_pb2.PutArtifactRequest(
                job_id=lease.job_id, lease_id=lease.lease_id,
                header=service_pb2.Artifact(name=name, sha256=sha, size=size))
            for chunk in chunks:
                yield service_pb2.PutArtifactRequest(chunk=chunk)
        return code_of(w.PutArtifact, messages(), metadata=metadata)

    code, details = put("model.pt", secret, len(secret_bytes), [])
    check(code == grpc.StatusCode.INVALID_ARGUMENT, f"attaching a known blob without its bytes: {code} {details}")
    code, details = put("model.pt", secret, len(secret_bytes), [b"x" * len(secret_bytes)])
    check(code == grpc.StatusCode.INVALID_ARGUMENT and "sha256 mismatch" in details, f"wrong bytes: {code} {details}")
    code, details = put("model.pt", secret, 10, [secret_bytes])
    check(code == grpc.StatusCode.INVALID_ARGUMENT, f"more bytes than declared: {code} {details}")
    code, details = put("../../evil.pt", secret, len(secret_bytes), [secret_bytes])
    check(code == grpc.StatusCode.INVALID_ARGUMENT and "plain file name" in details, f"a path as name: {code} {details}")
    code, details = put("model.pt", secret, len(secret_bytes), [secret_bytes], metadata=t2)
    check(code == grpc.StatusCode.PERMISSION_DENIED, f"an artifact for another lease: {code} {details}")
    check(not a.get(lease1.job_id).artifacts, "nothing was attached")
    produced = b"the job's own output"
    code, details = put("model.pt", hashlib.sha256(produced).hexdigest(), len(produced), [produced])
    check(code == grpc.StatusCode.OK, f"an artifact whose bytes are sent: {code} {details}")
    check([x.name for x in a.get(lease1.job_id).artifacts] == ["model.pt"], "and it is attached")

    # Checkpoints: the same rules; the lease that stored one reads it, no other lease does.
    checkpoint = b"epoch 1 of the job's training"
    code, details = put_checkpoint(lease1, checkpoint, t2)
    check(code == grpc.StatusCode.PERMISSION_DENIED, f"a checkpoint for another lease: {code} {details}")
    code, details = put_checkpoint(lease1, checkpoint, t1, sha=secret)
    check(code == grpc.StatusCode.INVALID_ARGUMENT and "sha256 mismatch" in details, f"checkpoint, wrong bytes: {code} {details}")
    code, details = put_checkpoint(lease1, checkpoint, t1)
    check(code == grpc.StatusCode.OK, f"a checkpoint whose bytes are sent: {code} {details}")
    checkpoint_sha = hashlib.sha256(checkpoint).hexdigest()
    code, _ = code_of(w.ReadBlob, service_pb2.ReadBlobRequest(sha256=checkpoint_sha), metadata=t1)
    check(code == grpc.StatusCode.OK, f"the lease reads its job's checkpoint: {code}")
    code, _ = code_of(w.ReadBlob, service_pb2.ReadBlobRequest(sha256=checkpoint_sha), metadata=t2)
    check(code == grpc.StatusCode.PERMISSION_DENIED, f"another job's checkpoint: {code}")

    # A request that does not parse (invalid UTF-8 in a string field): INVALID_ARGUMENT.
    fail_bytes = service_pb2.FailRequest(job_id=lease1.job_id, lease_id=lease1.lease_id,
                                         error="XXXX").SerializeToString().replace(b"XXXX", b"\xff\xfe\xfd\xfc")
    raw = server.channel.unary_unary("/qopt.v1.WorkerService/Fail")
    code, details = code_of(raw, fail_bytes, metadata=t1)
    check(code == grpc.StatusCode.INVALID_ARGUMENT, f"Fail with invalid UTF-8: {code} {details}")
    submit_bytes = service_pb2.SubmitJobRequest(recipe=recipe_pb2.Recipe(name="NNNN")).SerializeToString()
    code, details = code_of(server.channel.unary_unary("/qopt.v1.JobService/SubmitJob"),
                            submit_bytes.replace(b"NNNN", b"\xc0\xaf\xff\xfe"), metadata=md("token-a"))
    check(code == grpc.StatusCode.INVALID_ARGUMENT, f"SubmitJob with invalid UTF-8: {code} {details}")

    # The real error reaches the tenant; a finished lease's token says so.
    w.Fail(service_pb2.FailRequest(job_id=lease2.job_id, lease_id=lease2.lease_id,
                                   error="calibrate: data.npy: bad header"), metadata=t2)
    job = a.get(lease2.job_id)
    check(job.state == service_pb2.FAILED and job.error == "calibrate: data.npy: bad header",
          f"the worker's error is the job's: {job.error!r}")
    w.Complete(service_pb2.CompleteRequest(job_id=lease1.job_id, lease_id=lease1.lease_id, report_json="{}"),
               metadata=t1)
    code, _ = code_of(w.Heartbeat, service_pb2.HeartbeatRequest(job_id=lease1.job_id, lease_id=lease1.lease_id),
                      metadata=t1)
    check(code == grpc.StatusCode.FAILED_PRECONDITION, f"heartbeat after Complete: {code}")
    code, _ = code_of(w.ReadBlob, service_pb2.ReadBlobRequest(sha256=model), metadata=t1)
    check(code == grpc.StatusCode.FAILED_PRECONDITION, f"reading after Complete: {code}")
    code, _ = put_checkpoint(lease1, checkpoint, t1)
    check(code == grpc.StatusCode.FAILED_PRECONDITION, f"a checkpoint after Complete: {code}")

    # Recipes that cannot succeed are refused at submit.
    import qopt_client
    for label, steps in [("two exports of the same names", [{"export": {}}, {"export": {}}]),
                         ("an export prefix with ../", [{"export": {"prefix": "../../x"}}]),
                         ("an absolute export prefix", [{"export": {"prefix": "/tmp/x"}}])]:
        try:
            a.submit({"model": {"path": model}, "steps": steps})
            check(False, f"{label} accepted")
        except qopt_client.QoptError as error:
            check(error.code == "INVALID_ARGUMENT", f"{label}: {error.code} {error}")

    # Clients refuse artifact names that would leave the destination folder.
    try:
        a.download(lease1.job_id, "../escape.pt", server.dir)
        check(False, "the Python client downloaded ../escape.pt")
    except qopt_client.QoptError as error:
        check(error.code == "INVALID_ARGUMENT" and "plain file name" in str(error),
              f"Python client refuses ../escape.pt: {error}")
    cli = subprocess.run([os.environ["QOPT_CLI"], "download", lease1.job_id, "../escape.pt"],
                         env=dict(os.environ, QOPT_SERVER=server.address, QOPT_TOKEN="token-a"),
                         cwd=server.dir, capture_output=True, text=True)
    check(cli.returncode == 2 and "plain file name" in cli.stderr, f"CLI refuses ../escape.pt: {cli.stderr.strip()}")
finally:
    server.cleanup()

# Open mode (no --auth-file): loopback only unless a flag says otherwise.
refused = subprocess.run([os.environ["QOPT_SERVER_BIN"], "--listen", "0.0.0.0:0", "--data-dir", "/nonexistent/x"],
                         capture_output=True, text=True, timeout=30)
check(refused.returncode == 2 and "loopback" in refused.stderr, f"open server on 0.0.0.0 refused: {refused.stderr.strip()}")
open_remote = Server(["--allow-open-remote"], auth=False, listen="0.0.0.0:0")
try:
    open_remote.stop()
    log = open(open_remote.log_path).read()
    check("warning: open server" in log, "--allow-open-remote starts with a warning")
finally:
    open_remote.cleanup()
finish()
