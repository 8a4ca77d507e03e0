"""Shared by the Python service tests: a qopt-server on loopback in a temporary folder,
with tokens, optional workers, and a clean stop. Needs PYTHONPATH=BUILD/python (stubs and
qopt_client) and QOPT_SERVER_BIN / QOPT_WORKER_BIN."""
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import grpc

from qopt.v1 import service_pb2, service_pb2_grpc  # noqa: F401  (re-exported for tests)

AUTH = {"tenants": {"token-a": "team-a", "token-b": "team-b"}, "worker_tokens": ["token-w"]}

failures = []


def check(condition, message):
    """Records a failed expectation (the test goes on) and prints each outcome."""
    print(("ok   " if condition else "FAIL ") + message, flush=True)
    if not condition:
        failures.append(message)
    return condition


def finish():
    print(f"{len(failures)} failed", flush=True)
    sys.exit(1 if failures else 0)


def _die_with_parent(extra=None):
    """preexec_fn: the child gets SIGKILL when the test process dies (a ctest timeout), so
    no server or worker outlives its test."""
    def run():
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if extra:
            extra()
    return run


def md(token, lease_token=None):
    items = [("authorization", "Bearer " + token)]
    if lease_token:
        items.append(("qopt-lease-token", lease_token))
    return items


class Server:
    """qopt-server with the test auth file; `args` are extra flags. `preexec` runs in the
    child before exec (e.g. to lower RLIMIT_NOFILE)."""

    def __init__(self, args=(), auth=True, preexec=None, workers=0, listen="127.0.0.1:0"):
        self.dir = tempfile.mkdtemp(prefix="qopt_svc_")
        self.log_path = os.path.join(self.dir, "server.log")
        cmd = [os.environ["QOPT_SERVER_BIN"], "--listen", listen, "--data-dir", os.path.join(self.dir, "data")]
        if auth:
            with open(os.path.join(self.dir, "auth.json"), "w") as f:
                json.dump(AUTH, f)
            cmd += ["--auth-file", os.path.join(self.dir, "auth.json")]
        if workers:
            cmd += ["--local-workers", str(workers)]
        cmd += list(args)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     preexec_fn=_die_with_parent(preexec))
        self.address = None
        for _ in range(200):
            text = open(self.log_path).read()
            m = re.search(r"qopt-server listening on ([^,]+),", text)
            if m:
                self.address = m.group(1)
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        if self.address is None:
            raise RuntimeError("qopt-server did not start:\n" + open(self.log_path).read())
        self.channel = grpc.insecure_channel(self.address)
        self.blobs = service_pb2_grpc.BlobServiceStub(self.channel)
        self.jobs = service_pb2_grpc.JobServiceStub(self.channel)
        self.workers = service_pb2_grpc.WorkerServiceStub(self.channel)
        self.worker_procs = []

    def start_worker(self, worker_id, cache_dir, token="token-w", device="cpu"):
        env = dict(os.environ, QOPT_TOKEN=token, TMPDIR=self.dir)
        log = open(os.path.join(self.dir, worker_id + ".log"), "w")
        proc = subprocess.Popen([os.environ["QOPT_WORKER_BIN"], "--server", self.address, "--worker-id", worker_id,
                                 "--cache-dir", cache_dir, "--device", device],
                                stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent())
        self.worker_procs.append(proc)
        return proc

    def client(self, token):
        import qopt_client
        return qopt_client.Client(server=self.address, token=token)

    def stop(self):
        for proc in self.worker_procs + [self.proc]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.worker_procs + [self.proc]:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.channel.close()
        self.log.close()

    def cleanup(self):
        self.stop()
        if failures:
            print("--- server log (tail) ---\n" + open(self.log_path).read()[-4000:])
        shutil.rmtree(self.dir, ignore_errors=True)


def code_of(call, *args, **kwargs):
    """The gRPC status code (and details) a call ends with; OK when it succeeds."""
    try:
        result = call(*args, **kwargs)
        if hasattr(result, "__iter__") and not hasattr(result, "ListFields"):
            for _ in result:
                pass
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as error:
        return error.code(), error.details()
