"""Issue 11, point 6: 2,000 stalled upload streams from one tenant (over 20 loopback
connections) against a server limited to 1,024 descriptors. The tenant holds at most
--max-uploads-per-tenant of them (the rest are RESOURCE_EXHAUSTED at once), the held ones
are cancelled after --upload-idle-seconds, their partial bytes count in the tenant's usage
and are removed after --part-expiry-seconds; meanwhile another tenant's calls keep
answering with p99 under 100 ms."""
import asyncio
import json
import os
import resource
import subprocess
import sys
import time

import grpc

from service_harness import Server, check, finish, md, service_pb2, service_pb2_grpc

STREAMS, CHANNELS, SLOTS, IDLE_S, EXPIRY_S = 2000, 20, 8, 3, 6


def limit_descriptors():
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


# Another tenant's client in its own process (so the attacker's event loop does not
# slow it): unary calls and small uploads for `seconds`, printing the latencies.
VICTIM = r'''
import json, os, sys, time, hashlib
import grpc
from qopt.v1 import service_pb2, service_pb2_grpc
address, seconds = sys.argv[1], float(sys.argv[2])
md = [("authorization", "Bearer token-a")]
channel = grpc.insecure_channel(address)
blobs = service_pb2_grpc.BlobServiceStub(channel)
jobs = service_pb2_grpc.JobServiceStub(channel)
latencies, errors, n = [], [], 0
end = time.time() + seconds
while time.time() < end:
    start = time.perf_counter()
    try:
        if n % 10 == 9:
            data = os.urandom(1024)
            sha = hashlib.sha256(data).hexdigest()
            blobs.Upload(iter([service_pb2.UploadRequest(header=service_pb2.UploadHeader(sha256=sha, size=1024)),
                               service_pb2.UploadRequest(chunk=data)]), metadata=md, timeout=5)
        elif n % 2:
            blobs.GetUsage(service_pb2.GetUsageRequest(), metadata=md, timeout=5)
        else:
            jobs.ListJobs(service_pb2.ListJobsRequest(page_size=10), metadata=md, timeout=5)
    except grpc.RpcError as e:
        errors.append(f"{e.code()} {e.details()}")
    latencies.append((time.perf_counter() - start) * 1000)
    n += 1
    time.sleep(0.005)
print(json.dumps({"latencies_ms": latencies, "errors": errors}))
'''


async def attack(address, outcomes):
    channels = [grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(CHANNELS)]
    stubs = [service_pb2_grpc.BlobServiceStub(c) for c in channels]
    never = asyncio.Event()

    async def stalled(i, with_header):
        async def requests():
            if with_header:
                yield service_pb2.UploadRequest(header=service_pb2.UploadHeader(sha256=f"{i:064x}", size=10 << 20))
                yield service_pb2.UploadRequest(chunk=b"\0" * (64 << 10))
            await never.wait()  # then nothing, ever
        start = time.time()
        try:
            await stubs[i % CHANNELS].Upload(requests(), metadata=md("token-b"))
            outcomes.append(("OK", time.time() - start))
        except grpc.aio.AioRpcError as e:
            outcomes.append((e.code().name, time.time() - start))

    # The first streams send a header and a chunk (so they hold a .part file), the rest
    # half a header and half nothing at all.
    first = [asyncio.ensure_future(stalled(i, True)) for i in range(SLOTS)]
    await asyncio.sleep(0.5)
    rest = [asyncio.ensure_future(stalled(i, i % 2 == 0)) for i in range(SLOTS, STREAMS)]
    await asyncio.gather(*first, *rest)
    for c in channels:
        await c.close()


server = Server(["--upload-idle-seconds", str(IDLE_S), "--max-uploads-per-tenant", str(SLOTS),
                 "--part-expiry-seconds", str(EXPIRY_S), "--quota-bytes", str(100 << 20)],
                preexec=limit_descriptors)
try:
    limit = open(f"/proc/{server.proc.pid}/limits").read()
    check("Max open files            1024" in limit, "the server runs with a 1,024-descriptor limit")
    outcomes = []
    # The other tenant's calls run through the whole attack: while the 2,000 streams open
    # and while the held ones stall.
    victim = subprocess.Popen([sys.executable, "-c", VICTIM, server.address, str(IDLE_S)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=os.environ)
    time.sleep(0.3)
    attacker = __import__("threading").Thread(target=lambda: asyncio.run(attack(server.address, outcomes)))
    attacker.start()
    time.sleep(1.5)  # every stream opened
    fds = len(os.listdir(f"/proc/{server.proc.pid}/fd"))
    usage = server.blobs.GetUsage(service_pb2.GetUsageRequest(), metadata=md("token-b"))
    check(usage.used_bytes == SLOTS * (64 << 10),
          f"the stalled uploads' partial bytes count in the tenant's usage: {usage.used_bytes}")
    out, err = victim.communicate(timeout=60)
    result = json.loads(out) if victim.returncode == 0 else {"latencies_ms": [], "errors": [err]}
    attacker.join(timeout=IDLE_S + 30)
    lat = sorted(result["latencies_ms"])
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("inf")
    codes = {}
    for code, _ in outcomes:
        codes[code] = codes.get(code, 0) + 1
    held = [s for code, s in outcomes if code == "CANCELLED"]
    print(f"{len(outcomes)} stalled streams: {codes}; server descriptors while stalled: {fds}; "
          f"other tenant: {len(lat)} calls, p50 {lat[len(lat) // 2] if lat else 0:.1f} ms, p99 {p99:.1f} ms, "
          f"max {lat[-1] if lat else 0:.1f} ms", flush=True)
    check(len(outcomes) == STREAMS, f"all {STREAMS} streams ended")
    check(codes.get("RESOURCE_EXHAUSTED", 0) == STREAMS - SLOTS, f"{STREAMS - SLOTS} refused at once")
    check(len(held) == SLOTS and all(IDLE_S - 0.5 < s < IDLE_S + 3 for s in held),
          f"the {SLOTS} held streams were cancelled after ~{IDLE_S} s idle: {sorted(round(s, 1) for s in held)}")
    check(fds < 200, f"descriptors stay far below the limit ({fds})")
    check(not result["errors"], f"the other tenant's calls all succeeded: {result['errors'][:3]}")
    check(len(lat) > 50 and p99 < 100, f"the other tenant's p99 latency {p99:.1f} ms < 100 ms")

    # The partial files expire and leave the quota; the tenant can upload again.
    deadline = time.time() + EXPIRY_S + 10
    parts = None
    while time.time() < deadline:
        parts = [n for n in os.listdir(os.path.join(server.dir, "data", "uploads")) if n.endswith(".part")]
        if not parts:
            break
        time.sleep(0.5)
    check(not parts, f"expired partial uploads removed ({len(parts or [])} left)")
    usage = server.blobs.GetUsage(service_pb2.GetUsageRequest(), metadata=md("token-b"))
    check(usage.used_bytes == 0, f"and no longer counted: {usage.used_bytes}")
    data = os.urandom(4096)
    import hashlib
    reply = server.blobs.Upload(iter([service_pb2.UploadRequest(header=service_pb2.UploadHeader(
        sha256=hashlib.sha256(data).hexdigest(), size=len(data))), service_pb2.UploadRequest(chunk=data)]),
        metadata=md("token-b"), timeout=10)
    check(reply.size == 4096, "the tenant uploads again once its streams ended")
    check(server.proc.poll() is None, "the server is still running")
finally:
    server.cleanup()
finish()
