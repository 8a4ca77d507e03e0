"""Issue 11, points 7 and 8: with both workers busy on tenant A's 20 long jobs, tenant B's
single job starts in the next free slot (fair share between tenants); A's jobs stop at their
wall-time limit with a clear error; a priority above the server's maximum is refused; a
job that names cuda waits with a visible reason while CPU jobs run; a worker asked for a
device this build lacks refuses to start."""
import os
import subprocess
import time

import grpc

from service_harness import Server, check, finish, md, service_pb2

import qopt_client

LONG_JOBS, LIMIT_S = 20, 3
src = os.environ["QOPT_SOURCE_DIR"]
fmnist = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
server = Server(["--max-job-seconds", "600"], workers=2)
try:
    a, b = server.client("token-a"), server.client("token-b")
    model_a, data_a = a.upload(os.path.join(src, "zoo", "small_cnn.pt")), a.upload(fmnist)
    model_b = b.upload(os.path.join(src, "zoo", "small_cnn.pt"))
    data = {"path": data_a, "max_samples": 32, "batch_size": 32}
    long_recipe = {"model": {"path": model_a}, "calibration_data": data,
                   "steps": [{"calibrate": {}}, {"adaround": {"num_iterations": 100000000}}]}
    # Limits of 3 and 60 s in turn, so the two running jobs never free their slots at
    # about the same time: the first free slot is unambiguous. A's jobs outrank B's.
    long_ids = [a.submit(dict(long_recipe, time_limit_seconds=LIMIT_S if k % 2 == 0 else 60), priority=100).id
                for k in range(LONG_JOBS)]

    def states(ids):
        return [a.get(i).state for i in ids]

    deadline = time.time() + 30
    while time.time() < deadline and states(long_ids).count(service_pb2.RUNNING) < 2:
        time.sleep(0.1)
    check(states(long_ids).count(service_pb2.RUNNING) == 2, "both workers run tenant A's jobs")
    short = b.submit({"model": {"path": model_b}, "steps": [{"fold_batch_norm": {}}]}).id
    deadline = time.time() + 30
    while time.time() < deadline and b.get(short).state != service_pb2.SUCCEEDED:
        time.sleep(0.1)
    check(b.get(short).state == service_pb2.SUCCEEDED, "tenant B's job succeeded")

    def leased_ms(client, job_id):
        """When the job was leased, from the events it has so far (it may still run)."""
        token = "token-a" if client is a else "token-b"
        times = []
        try:
            for e in server.jobs.WatchJob(service_pb2.WatchJobRequest(id=job_id), metadata=md(token), timeout=0.5):
                if e.stage == "leased":
                    times.append(e.unix_ms)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
        return times

    b_leased = leased_ms(b, short)[0]
    before_b = [i for i in long_ids if any(t < b_leased for t in leased_ms(a, i))]
    check(len(before_b) == 2, f"B's job took the first free slot: {len(before_b)} of A's jobs were leased before it "
          "(the two already running)")

    first = a.get(long_ids[0])
    ran_s = (first.updated_unix_ms - leased_ms(a, long_ids[0])[0]) / 1000
    check(first.state == service_pb2.FAILED and f"time limit of {LIMIT_S} s exceeded" in first.error,
          f"A's first job stopped at its limit after {ran_s:.1f} s: {first.error}")
    check(LIMIT_S <= ran_s < LIMIT_S + 2, f"within 2 s of the limit ({ran_s:.1f} s)")

    try:
        a.submit(long_recipe, priority=1000)
        check(False, "priority 1000 accepted")
    except qopt_client.QoptError as error:
        check(error.code == "INVALID_ARGUMENT" and "maximum of 100" in str(error), f"priority 1000: {error}")
    for i in long_ids:
        if a.get(i).state in (service_pb2.QUEUED, service_pb2.RUNNING):
            a.cancel(i)

    # A cuda job on a server with CPU workers only waits, saying why; CPU jobs pass it.
    gpu = b.submit({"model": {"path": model_b}, "device": "cuda:0", "steps": [{"fold_batch_norm": {}}]}).id
    cpu = b.submit({"model": {"path": model_b}, "steps": [{"fold_batch_norm": {}}]}).id
    deadline = time.time() + 60
    while time.time() < deadline and b.get(cpu).state != service_pb2.SUCCEEDED:
        time.sleep(0.1)
    job = b.get(gpu)
    check(b.get(cpu).state == service_pb2.SUCCEEDED, "the CPU job submitted after it ran")
    check(job.state == service_pb2.QUEUED and job.stage == "waiting for a worker with cuda",
          f"the cuda job waits: {service_pb2.JobState.Name(job.state)} '{job.stage}'")
    b.cancel(gpu)

    worker = subprocess.Popen([os.environ["QOPT_WORKER_BIN"], "--server", server.address, "--device", "cuda:0"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=dict(os.environ, QOPT_TOKEN="token-w", TMPDIR=server.dir))
    try:
        out, _ = worker.communicate(timeout=20)
        check(worker.returncode == 2 and "--device cuda:0" in out and "CUDA" in out,
              f"a worker asked for cuda:0 on a build without CUDA refuses to start: {out.strip()}")
    except subprocess.TimeoutExpired:
        worker.kill()
        print("skip a worker with --device cuda:0 started: this build and machine have CUDA")
finally:
    server.cleanup()
finish()
