"""Issue 11, point 4: two workers of one host share a blob cache. In each of 50 trials a
new blob is uploaded and two jobs that read it are submitted at once, so both workers
fetch it at the same time: no job may fail. Then a cached blob overwritten with other
bytes (as a job could) is re-hashed, fetched again, and the next job still succeeds; and
a job folder left by a worker that died is removed when a worker starts; a job asking for
256 threads gets no more than the worker's cores."""
import os
import time

from service_harness import Server, check, finish, service_pb2

TRIALS = 50
src = os.environ["QOPT_SOURCE_DIR"]
server = Server()
try:
    cache = os.path.join(server.dir, "shared-cache")
    # What a worker killed mid-job leaves: $TMPDIR/qopt-worker-<pid> of a process that is gone.
    dead_pid = 4194000
    while True:
        try:
            os.kill(dead_pid, 0)
            dead_pid -= 1
        except ProcessLookupError:
            break
        except PermissionError:
            dead_pid -= 1
    orphan = os.path.join(server.dir, f"qopt-worker-{dead_pid}")
    os.makedirs(os.path.join(orphan, "job-x"))
    server.start_worker("host-1", cache)
    server.start_worker("host-2", cache)
    a = server.client("token-a")
    model = a.upload(os.path.join(src, "zoo", "small_cnn.pt"))

    def run_pair(data_sha):
        recipe = {"model": {"path": model}, "calibration_data": {"path": data_sha},
                  "steps": [{"fold_batch_norm": {}}]}
        ids = [a.submit(recipe).id, a.submit(recipe).id]
        deadline = time.time() + 60
        jobs = [a.get(i) for i in ids]
        while time.time() < deadline and not all(j.state in (service_pb2.SUCCEEDED, service_pb2.FAILED,
                                                               service_pb2.CANCELLED) for j in jobs):
            time.sleep(0.02)
            jobs = [a.get(i) for i in ids]
        return jobs

    def leases(job_id):
        """(worker, unix_ms) of the job's 'leased' events."""
        out = []
        for e in a.watch(job_id):
            if e.stage == "leased":
                out.append((e.message.replace("leased by ", ""), e.unix_ms))
        return out

    failed, concurrent, started = [], 0, time.time()
    for trial in range(TRIALS):
        path = os.path.join(server.dir, f"data-{trial}.bin")
        with open(path, "wb") as f:
            f.write(os.urandom(4 << 20))
        data = a.upload(path)
        os.remove(path)
        jobs = run_pair(data)
        failed += [f"{j.id}: {service_pb2.JobState.Name(j.state)} {j.error}" for j in jobs
                   if j.state != service_pb2.SUCCEEDED]
        first, second = leases(jobs[0].id), leases(jobs[1].id)
        if len(first) == 1 and len(second) == 1 and first[0][0] != second[0][0] \
                and abs(first[0][1] - second[0][1]) < 250:
            concurrent += 1
    print(f"{TRIALS} trials ({2 * TRIALS} jobs) in {time.time() - started:.1f} s; "
          f"{concurrent} with both workers fetching the new blob at once", flush=True)
    check(not failed, f"{len(failed)} of {2 * TRIALS} jobs failed" + (f": {failed[:3]}" if failed else ""))
    check(concurrent >= TRIALS // 2, f"the race was exercised: {concurrent} of {TRIALS} trials leased to "
          "both workers within 250 ms")
    check(not [n for n in os.listdir(cache) if n.endswith(".partial")], "no temporary fetch file is left")

    # A cached blob changed behind the workers' back is not trusted.
    with open(os.path.join(cache, model), "wb") as f:
        f.write(b"not the model")
    jobs = run_pair(data)
    check(all(j.state == service_pb2.SUCCEEDED for j in jobs),
          f"jobs after the cached model was overwritten: {[service_pb2.JobState.Name(j.state) + ' ' + j.error for j in jobs]}")
    import hashlib
    with open(os.path.join(cache, model), "rb") as f:
        check(hashlib.sha256(f.read()).hexdigest() == model, "the cached model was fetched again")
    check(not os.path.exists(orphan), f"the dead worker's folder qopt-worker-{dead_pid} was removed")

    # num_threads is capped at the worker's cores: LibTorch keeps the threads it starts.
    fmnist = a.upload("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
    greedy = a.submit({"model": {"path": model}, "num_threads": 256,
                       "calibration_data": {"path": fmnist, "max_samples": 64, "batch_size": 64},
                       "steps": [{"calibrate": {}}]}).id
    deadline = time.time() + 60
    while time.time() < deadline and a.get(greedy).state not in (service_pb2.SUCCEEDED, service_pb2.FAILED):
        time.sleep(0.05)
    check(a.get(greedy).state == service_pb2.SUCCEEDED, f"the num_threads 256 job ran: {a.get(greedy).error}")

    def threads(pid):
        with open(f"/proc/{pid}/status") as f:
            return int(next(line.split()[1] for line in f if line.startswith("Threads:")))
    counts = [threads(p.pid) for p in server.worker_procs]
    check(max(counts) < 64 + os.cpu_count(), f"worker threads after a num_threads 256 job: {counts} "
          f"({os.cpu_count()} cores)")
finally:
    server.cleanup()
finish()
