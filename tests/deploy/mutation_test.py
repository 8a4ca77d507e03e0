#!/usr/bin/python3
"""Breaks the deployment files one way at a time, in a copy, and expects
check_manifests.py to fail and name the broken file. A check that passes every
mutation checks nothing.

usage: mutation_test.py QOPT_SERVER QOPT_WORKER [--cli QOPT] [--source-dir DIR]
"""
import argparse
import concurrent.futures
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
K = "deploy/kubernetes/"
STS, SVC, WORKER, GPU = (K + "server-statefulset.yaml", K + "server-service.yaml",
                         K + "worker-deployment.yaml", K + "worker-gpu-deployment.yaml")
SECRET, KUSTOMIZATION, TLS = K + "secret.example.yaml", K + "kustomization.yaml", K + "components/tls/"
PROMETHEUS, DOCKERFILE, DOCKER_README = "deploy/prometheus/prometheus.yml", "docker/Dockerfile", "docker/README.md"

# (what breaks, file, text there, replacement); the text must occur in the file.
MUTATIONS = [
    ("YAML that does not parse", WORKER, "  replicas: 2\n", "  replicas: [2\n"),
    ("a flag the server lacks", STS, "--metrics-listen=", "--metrics-address="),
    ("a flag the worker lacks", WORKER, "--cache-dir=/cache", "--cache=/cache"),
    ("the required --data-dir dropped", STS, "            - --data-dir=/data\n", ""),
    ("a valued flag without value", WORKER, "- --device=cpu", "- --device"),
    ("server listening on loopback", STS, "--listen=0.0.0.0:50051", "--listen=127.0.0.1:50051"),
    ("--listen port not declared", STS, "--listen=0.0.0.0:50051", "--listen=0.0.0.0:50052"),
    ("--data-dir on the read-only root", STS, "--data-dir=/data", "--data-dir=/var/lib/qopt"),
    ("--data-dir on an emptyDir", STS, "--data-dir=/data", "--data-dir=/tmp/qopt"),
    ("auth file not a Secret key", STS, "--auth-file=/etc/qopt/auth/auth.json",
     "--auth-file=/etc/qopt/auth/tokens.json"),
    ("readiness probe on an undeclared port", STS, "          readinessProbe:\n            grpc:\n"
     "              port: 50051", "          readinessProbe:\n            grpc:\n              port: 50052"),
    ("liveness probe on the metrics port", STS, "          livenessProbe:\n            grpc:\n"
     "              port: 50051", "          livenessProbe:\n            grpc:\n              port: 9090"),
    ("two server replicas", STS, "  replicas: 1", "  replicas: 2"),
    ("Service selecting the workers", SVC, "  selector:\n    app.kubernetes.io/name: qopt\n"
     "    app.kubernetes.io/component: server", "  selector:\n    app.kubernetes.io/name: qopt"),
    ("Service selecting nothing", SVC, "    app.kubernetes.io/component: server\n  ports",
     "    app.kubernetes.io/component: qopt-server\n  ports"),
    ("Service without a selector", SVC, "  selector:\n    app.kubernetes.io/name: qopt\n"
     "    app.kubernetes.io/component: server\n  ports", "  ports"),
    ("Service targeting an undeclared port", SVC, "targetPort: metrics", "targetPort: prometheus"),
    ("worker dialling another host", WORKER, "--server=qopt-server:50051", "--server=qopt:50051"),
    ("worker dialling the metrics port", WORKER, "--server=qopt-server:50051",
     "--server=qopt-server:9090"),
    ("worker token from a missing key", WORKER, "key: worker-token", "key: token"),
    ("GPU worker on cpu", GPU, "--device=cuda:0", "--device=cpu"),
    ("GPU worker on a GPU it lacks", GPU, "--device=cuda:0", "--device=cuda:1"),
    ("CPU worker on cuda", WORKER, "--device=cpu", "--device=cuda:0"),
    ("unbuilt image deployed", GPU, "  replicas: 0", "  replicas: 1"),
    ("pod uid not the image's", WORKER, "runAsUser: 10001", "runAsUser: 1000"),
    ("manifest left out of the kustomization", KUSTOMIZATION, "  - worker-deployment.yaml\n", ""),
    ("example worker-token not a worker token", SECRET, "  worker-token: REPLACE-ME-worker-token",
     "  worker-token: REPLACE-ME-other-token"),
    ("example token that looks real", SECRET, '"REPLACE-ME-tenant-b-token"', '"3f9a1c77d2"'),
    ("TLS flag the server lacks", TLS + "server.yaml", "--tls-cert=", "--tls-certificate="),
    ("TLS key file not in the mount", TLS + "server.yaml", "--tls-key=/etc/qopt/tls/tls.key",
     "--tls-key=/etc/qopt/tls/server.key"),
    ("worker CA from a missing key", TLS + "worker.yaml", "- key: ca.crt", "- key: ca.pem"),
    ("patch for a missing object", TLS + "kustomization.yaml", "name: qopt-worker-gpu",
     "name: qopt-gpu-worker"),
    ("static target on the gRPC port", PROMETHEUS, '"qopt-server:9090"', '"qopt-server:50051"'),
    ("relabel keeping another port name", PROMETHEUS, "regex: metrics", "regex: http-metrics"),
    ("invalid Prometheus config", PROMETHEUS, "scrape_interval: 15s\n  evaluation",
     "scrape_interval: 15 seconds\n  evaluation"),
    ("annotation on the wrong port", SVC, 'prometheus.io/port: "9090"', 'prometheus.io/port: "9091"'),
    ("README building a missing stage", DOCKER_README, "--target worker", "--target workers"),
    ("COPY from a missing stage", DOCKERFILE, "COPY --from=build /build/worker/",
     "COPY --from=builder /build/worker/"),
    ("CMD flag the server lacks", DOCKERFILE, '"--metrics-listen", "0.0.0.0:9090"]',
     '"--metrics", "0.0.0.0:9090"]'),
    ("metrics port not exposed", DOCKERFILE, "EXPOSE 50051 9090", "EXPOSE 50051"),
    ("image running as root", DOCKERFILE, "USER 10001:10001\nENTRYPOINT [\"/usr/local/bin/qopt-worker\"]",
     "USER root\nENTRYPOINT [\"/usr/local/bin/qopt-worker\"]"),
    ("runtime library not installed", DOCKERFILE, " libsqlite3-0 ", " "),
]

# Mutations that only a tool on the PATH can catch; skipped (and said) without it.
NEEDS = {"invalid Prometheus config": "promtool", "runtime library not installed": "readelf"}


def try_mutation(check, source, tmp, index, mutation):
    """Applies one mutation to a fresh copy; returns (caught, the line to print)."""
    what, rel, old, new = mutation
    tree = os.path.join(tmp, str(index))
    for folder in ("deploy", "docker"):
        shutil.copytree(os.path.join(source, folder), os.path.join(tree, folder))
    path = os.path.join(tree, rel)
    with open(path) as f:
        text = f.read()
    if old not in text:
        return False, (f"FAIL {rel}: mutation {what!r}: text {old!r} is not in the file any "
                       "more; update tests/deploy/mutation_test.py")
    with open(path, "w") as f:
        f.write(text.replace(old, new, 1))
    run = subprocess.run(check + ["--source-dir", tree], capture_output=True, text=True)
    fails = [line for line in run.stdout.splitlines() if line.startswith("FAIL")]
    named = [line for line in fails if rel.rstrip("/") in line]
    if run.returncode != 0 and named:
        return True, f"ok   {what}: {named[0][:160]}"
    return False, (f"FAIL {rel}: mutation {what!r} was not caught (exit {run.returncode}; "
                   f"failures: {fails[:3] or 'none'})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server")
    parser.add_argument("worker")
    parser.add_argument("--cli", default="")
    parser.add_argument("--source-dir", default=os.path.join(HERE, "..", ".."))
    args = parser.parse_args()
    source = os.path.abspath(args.source_dir)
    check = [sys.executable, os.path.join(HERE, "check_manifests.py"), args.server, args.worker,
             "--cli", args.cli]
    mutations = []
    for m in MUTATIONS:
        if m[0] in NEEDS and shutil.which(NEEDS[m[0]]) is None:
            print(f"skip {m[0]}: {NEEDS[m[0]]} not found")
        else:
            mutations.append(m)
    with tempfile.TemporaryDirectory() as tmp, \
            concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        results = list(pool.map(lambda im: try_mutation(check, source, tmp, *im), enumerate(mutations)))
    for _, line in results:
        print(line)
    passed = sum(caught for caught, _ in results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
