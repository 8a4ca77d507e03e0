#!/usr/bin/python3
"""Checks deploy/ and docker/ against each other and against the real binaries.

usage: check_manifests.py QOPT_SERVER QOPT_WORKER [--cli QOPT] [--source-dir DIR]

The options each binary accepts come from its own `--help`, so a manifest that passes a
flag the binary lacks fails here, not in a cluster. Every problem is printed as
"FAIL <file>: <problem>"; the exit status is 1 when there is any.
"""
import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cli_help  # noqa: E402
from docker_checks import DockerChecks  # noqa: E402
from kube import (WORKLOADS, apply_json6902, containers, host_port, image_name,  # noqa: E402
                  labels_match, pod_spec, resolve_port)
from prometheus_checks import PrometheusChecks  # noqa: E402
from report import Report, Sources  # noqa: E402

# The keys deploy/README.md ("TLS") has the operator put in the qopt-tls Secret, which
# has no example file to read them from.
TLS_SECRET = "qopt-tls"
TLS_SECRET_KEYS = {"tls.crt", "tls.key", "ca.crt"}


class Checker(DockerChecks, PrometheusChecks):
    """The Kubernetes checks; docker/ and Prometheus come from the mixins."""

    def __init__(self, root, server, worker, cli_binary, report):
        self.root = root
        self.report = report
        self.src = Sources(root, report)
        self.kube_dir = os.path.join(root, "deploy", "kubernetes")
        self.binaries = {"qopt-server": server, "qopt-worker": worker, "qopt": cli_binary}
        self.clis = {}
        for name in ("qopt-server", "qopt-worker"):
            cli, error = cli_help.load_cli(self.binaries[name])
            if cli is None:
                report.fail(self.binaries[name], error)
            else:
                report.ok(f"{name} --help lists {len(cli.options)} options")
                self.clis[name] = cli
        self.secrets = {}  # name -> {key: value} from the example Secret(s)
        self.images = {}  # image name -> docker stage (from docker/README.md)
        self.stages = {}
        self.image_uids = {}  # image name -> the uid its Dockerfile stage runs as

    # -- files -----------------------------------------------------------------------------

    def run(self):
        if len(self.clis) < 2:
            return  # every later check reads the flags; their failure is already reported
        self.check_all_yaml_parses()
        self.check_example_secret()
        base = self.load_kustomization(self.kube_dir)
        if base is None:
            return
        variants = [(f"kustomization.yaml + {c}", self.apply_component(c, base))
                    for c in self.components()]
        self.check_docker()
        self.check_objects("kustomization.yaml", base)
        for label, objects in variants:
            if objects is not None:
                self.check_objects(label, objects)
        self.check_prometheus(base)
        self.check_with_kubectl(base)

    def check_all_yaml_parses(self):
        for folder, _, files in os.walk(os.path.join(self.root, "deploy")):
            for f in sorted(files):
                if f.endswith((".yaml", ".yml")):
                    self.src.load_yaml(os.path.join(folder, f))

    def objects_in(self, path):
        docs = self.src.load_yaml(path) or []
        objects = []
        for d in docs:
            if not isinstance(d, dict) or not {"apiVersion", "kind", "metadata"} <= d.keys():
                self.report.fail(self.src.rel(path), "a document lacks apiVersion, kind or metadata")
                continue
            d["_file"] = self.src.rel(path)
            missing = self.missing_fields(d)
            if missing:
                self.report.fail(d["_file"], f"{d['kind']} {d['metadata'].get('name')} lacks {missing}")
                continue
            objects.append(d)
        return objects

    @staticmethod
    def missing_fields(obj):
        """The first field the checks read that the object lacks, or ""."""
        need = {"Service": ["spec.selector", "spec.ports"],
                "StatefulSet": ["spec.selector.matchLabels", "spec.template.metadata.labels",
                                "spec.template.spec.containers"]}
        need["Deployment"] = need["StatefulSet"]
        for path in ["metadata.name"] + need.get(obj["kind"], []):
            node = obj
            for key in path.split("."):
                if not isinstance(node, dict) or key not in node:
                    return path
                node = node[key]
        if obj["kind"] in need and obj["kind"] != "Service":
            for c in obj["spec"]["template"]["spec"]["containers"]:
                if not isinstance(c, dict) or not {"name", "image"} <= c.keys():
                    return "spec.template.spec.containers[].name / image"
        return ""

    def load_kustomization(self, folder):
        path = os.path.join(folder, "kustomization.yaml")
        rel = self.src.rel(path)
        docs = self.src.load_yaml(path)
        if not docs:
            self.report.fail(rel, "missing or empty")
            return None
        listed = docs[0].get("resources", [])
        objects = []
        for r in listed:
            if not os.path.isfile(os.path.join(folder, r)):
                self.report.fail(rel, f"resource {r} does not exist")
                continue
            objects += self.objects_in(os.path.join(folder, r))
        # A manifest left out of the kustomization is never deployed; examples are left out
        # on purpose (placeholder tokens).
        for f in sorted(os.listdir(folder)):
            if f.endswith(".yaml") and f != "kustomization.yaml" and ".example." not in f:
                self.report.check(f in listed, rel, f"{f} is not listed in resources",
                                  f"{rel} lists {f}")
        return objects

    def components(self):
        folder = os.path.join(self.kube_dir, "components")
        if not os.path.isdir(folder):
            return []
        return sorted(os.path.join("components", c) for c in os.listdir(folder)
                      if os.path.isfile(os.path.join(folder, c, "kustomization.yaml")))

    def apply_component(self, component, base):
        folder = os.path.join(self.kube_dir, component)
        rel = self.src.rel(os.path.join(folder, "kustomization.yaml"))
        docs = self.src.load_yaml(os.path.join(folder, "kustomization.yaml"))
        if not docs:
            return None
        objects = copy.deepcopy(base)
        for patch in docs[0].get("patches", []):
            path = os.path.join(folder, patch.get("path", ""))
            target = patch.get("target", {})
            if not os.path.isfile(path):
                self.report.fail(rel, f"patch {patch.get('path')} does not exist")
                continue
            ops = (self.src.load_yaml(path) or [None])[0]
            if not isinstance(ops, list):
                self.report.fail(self.src.rel(path), "not a JSON 6902 patch (a list of ops)")
                continue
            hits = [o for o in objects if o["kind"] == target.get("kind")
                    and o["metadata"]["name"] == target.get("name")]
            if not self.report.check(hits, rel, f"patch target {target} matches no object",
                                     f"{rel}: {patch['path']} targets {target.get('name')}"):
                continue
            for obj in hits:
                try:
                    apply_json6902(obj, ops)
                    obj["_file"] = f"{obj['_file']} + {self.src.rel(path)}"
                except (KeyError, IndexError, ValueError, TypeError) as e:
                    self.report.fail(self.src.rel(path), f"does not apply to {target}: {e!r}")
        return objects

    # -- the example Secret ------------------------------------------------------------------

    def check_example_secret(self):
        for f in sorted(os.listdir(self.kube_dir)):
            if not f.endswith(".example.yaml"):
                continue
            for obj in self.objects_in(os.path.join(self.kube_dir, f)):
                if obj["kind"] == "Secret":
                    data = dict(obj.get("stringData", {}))
                    self.secrets[obj["metadata"]["name"]] = data
                    self.check_auth_secret(obj["_file"], data)

    def check_auth_secret(self, rel, data):
        if "auth.json" not in data:
            return
        try:
            auth = json.loads(data["auth.json"])
            tenants, workers = auth["tenants"], auth.get("worker_tokens", [])
            assert isinstance(tenants, dict) and all(isinstance(v, str) for v in tenants.values())
            assert isinstance(workers, list) and all(isinstance(v, str) for v in workers)
        except (ValueError, KeyError, AssertionError, TypeError):
            self.report.fail(rel, 'auth.json is not {"tenants": {token: tenant}, '
                                  '"worker_tokens": [token, ...]} (qopt-server --auth-file)')
            return
        self.report.ok(f"{rel}: auth.json has the --auth-file shape")
        if "worker-token" in data:
            self.report.check(data["worker-token"] in workers, rel,
                              "worker-token is not one of auth.json's worker_tokens",
                              f"{rel}: worker-token is a worker token")
        tokens = list(tenants) + workers + ([data["worker-token"]] if "worker-token" in data else [])
        self.report.check(all("REPLACE-ME" in t for t in tokens), rel,
                          "every token in the example must be an obvious placeholder (REPLACE-ME...)",
                          f"{rel}: tokens are placeholders")

    # -- Kubernetes objects ------------------------------------------------------------------

    def check_objects(self, variant, objects):
        print(f"---- {variant}")
        workloads = [o for o in objects if o["kind"] in WORKLOADS]
        services = [o for o in objects if o["kind"] == "Service"]
        server_container = None
        for w in workloads:
            self.check_workload(w)
            for c in containers(w):
                if image_name(c.get("image", "")) == "qopt-server":
                    server_container = (w, c)
        for s in services:
            self.check_service(s, workloads)
        if server_container is None:
            self.report.fail(variant, "no workload runs the qopt-server image")
            return
        self.check_server(*server_container, services)
        for w in workloads:
            for c in containers(w):
                if image_name(c.get("image", "")).startswith("qopt-worker"):
                    self.check_worker_target(w, c, services, server_container)

    @staticmethod
    def binary_for(image):
        name = image_name(image)
        if name == "qopt-server":
            return "qopt-server"
        if name.startswith("qopt-worker"):
            return "qopt-worker"
        return None

    def check_workload(self, w):
        rel, name = w["_file"], w["metadata"]["name"]
        spec = w["spec"]
        labels = spec["template"]["metadata"].get("labels", {})
        self.report.check(labels_match(spec["selector"].get("matchLabels", {}), labels), rel,
                          f"{name}: selector.matchLabels does not match the pod template's labels",
                          f"{name}: selector matches its pods")
        for c in containers(w):
            self.check_container(w, c)
            # The volumes (fsGroup) and the image's own directories must agree on one uid.
            uid = self.image_uids.get(image_name(c.get("image", "")))
            run_as = c.get("securityContext", {}).get(
                "runAsUser", pod_spec(w).get("securityContext", {}).get("runAsUser", uid))
            if uid is not None:
                self.report.check(run_as == uid, rel, f"{name}/{c['name']}: runAsUser {run_as} "
                                  f"is not the image's USER {uid} (docker/Dockerfile)",
                                  f"{name}/{c['name']}: runs as the image's uid")
        for v in pod_spec(w).get("volumes", []):
            if "secret" in v:
                self.check_secret_volume(rel, name, v["secret"])

    def known_secret_keys(self, secret):
        if secret == TLS_SECRET:
            return TLS_SECRET_KEYS
        return set(self.secrets.get(secret, {}))

    def check_secret_volume(self, rel, name, secret):
        keys = self.known_secret_keys(secret["secretName"])
        if not self.report.check(keys, rel, f"{name}: volume uses Secret {secret['secretName']}, "
                                 "which no example Secret defines", f"{name}: Secret "
                                 f"{secret['secretName']} is defined"):
            return
        for item in secret.get("items", []):
            self.report.check(item["key"] in keys, rel,
                              f"{name}: Secret {secret['secretName']} has no key {item['key']}",
                              f"{name}: Secret {secret['secretName']} has {item['key']}")

    def mounted_file(self, w, c, path):
        """What backs an absolute path in a container: (volume, path inside the mount) or
        (None, None) when no volumeMount holds it."""
        best = None
        for m in c.get("volumeMounts", []):
            mount = m["mountPath"].rstrip("/")
            if (path == mount or path.startswith(mount + "/")) and (
                    best is None or len(mount) > len(best["mountPath"].rstrip("/"))):
                best = m
        if best is None:
            return None, None
        volumes = {v["name"]: v for v in pod_spec(w).get("volumes", [])}
        for t in w["spec"].get("volumeClaimTemplates", []):
            volumes[t["metadata"]["name"]] = {"name": t["metadata"]["name"], "claim": t}
        inside = path[len(best["mountPath"].rstrip("/")):].lstrip("/")
        return volumes.get(best["name"], {"name": best["name"], "missing": True}), inside

    def check_path(self, w, c, flag, path):
        rel, name = w["_file"], w["metadata"]["name"]
        volume, inside = self.mounted_file(w, c, path)
        if not self.report.check(volume is not None, rel,
                                 f"{name}: {flag} {path} is on no volumeMount (the root file system "
                                 "is read-only and holds no such file)", f"{name}: {flag} is mounted"):
            return
        if not self.report.check(not volume.get("missing"), rel,
                                 f"{name}: volumeMount {volume['name']} names no volume",
                                 f"{name}: volume {volume['name']} exists"):
            return
        if "secret" in volume:
            secret = volume["secret"]
            items = {i["path"]: i["key"] for i in secret.get("items", [])}
            key = items.get(inside) if items else inside
            keys = self.known_secret_keys(secret["secretName"])
            self.report.check(key is not None and key in keys, rel,
                              f"{name}: {flag} {path} is not a key of Secret {secret['secretName']} "
                              f"as mounted (keys: {', '.join(sorted(items or keys))})",
                              f"{name}: {flag} is Secret {secret['secretName']} key {key}")

    def check_container(self, w, c):
        rel, name = w["_file"], f"{w['metadata']['name']}/{c['name']}"
        binary = self.binary_for(c.get("image", ""))
        if not self.report.check(binary, rel, f"{name}: image {c.get('image')} is neither "
                                 "qopt-server nor qopt-worker*", f"{name}: image is known"):
            return
        if "command" in c:
            self.report.check(os.path.basename(str(c["command"][0])) == binary, rel,
                              f"{name}: command {c['command'][0]} is not {binary}",
                              f"{name}: command is {binary}")
        cli = self.clis.get(binary)
        if cli is None:
            return
        args = list(c.get("command", [])[1:]) + list(c.get("args", []))
        values, problems = cli_help.parse_args(cli, args)
        for p in problems:
            self.report.fail(rel, f"{name}: {p}")
        if not problems:
            self.report.ok(f"{name}: args are accepted by {binary}")
        c["_values"] = values
        env_options = cli.env_options()
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                keys = self.known_secret_keys(ref["name"])
                self.report.check(ref["key"] in keys, rel,
                                  f"{name}: env {e['name']} reads key {ref['key']} of Secret "
                                  f"{ref['name']}, which the example does not define",
                                  f"{name}: env {e['name']} key exists")
            if e["name"] in env_options and "value" in e:
                values.setdefault(env_options[e["name"]], e["value"])
        for flag, value in values.items():
            if isinstance(value, str) and value.startswith("/"):
                self.check_path(w, c, flag, value)
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = c.get(kind)
            if not probe:
                continue
            port = None
            for action in ("grpc", "tcpSocket", "httpGet"):
                if action in probe:
                    port = probe[action].get("port")
            if "grpc" in probe:
                self.report.check(isinstance(port, int), rel,
                                  f"{name}: {kind}.grpc.port must be a number (Kubernetes takes "
                                  "no port names there)", f"{name}: {kind} port is a number")
            self.report.check(resolve_port(c, port) is not None, rel,
                              f"{name}: {kind} probes port {port}, which the container does not "
                              "declare", f"{name}: {kind} port {port} is declared")
        if binary == "qopt-worker":
            self.check_worker_container(w, c, values)

    def check_worker_container(self, w, c, values):
        rel, name = w["_file"], w["metadata"]["name"]
        self.report.check("--server" in values, rel, f"{name}: qopt-worker needs --server HOST:PORT "
                          "to lease jobs", f"{name}: worker has --server")
        limits = c.get("resources", {}).get("limits", {})
        gpus = int(limits.get("nvidia.com/gpu", 0))
        device = str(values.get("--device", "cpu"))
        m = re.fullmatch(r"cuda:(\d+)", device)
        if gpus:
            self.report.check(m and int(m.group(1)) < gpus, rel,
                              f"{name}: asks for {gpus} GPU(s) but runs --device {device} "
                              "(the container sees its GPUs as cuda:0..N-1)",
                              f"{name}: --device {device} fits its {gpus} GPU(s)")
        else:
            self.report.check(not m, rel, f"{name}: --device {device} without a nvidia.com/gpu limit",
                              f"{name}: CPU worker runs on cpu")
        image = image_name(c["image"])
        if image not in self.images:
            self.report.check(w["spec"].get("replicas", 1) == 0, rel,
                              f"{name}: image {image} is not built by docker/Dockerfile "
                              "(docker/README.md), so the workload must stay at replicas: 0",
                              f"{name}: image {image} is an example at replicas 0")

    def check_server(self, w, c, services):
        rel, name = w["_file"], w["metadata"]["name"]
        values = c.get("_values", {})
        if w["kind"] == "StatefulSet":
            self.report.check(w["spec"].get("replicas", 1) == 1, rel,
                              f"{name}: replicas must be 1 (SQLite has one writer)",
                              f"{name}: one replica")
            self.report.check(any(s["metadata"]["name"] == w["spec"].get("serviceName")
                                  for s in services), rel,
                              f"{name}: serviceName {w['spec'].get('serviceName')} names no Service",
                              f"{name}: serviceName names a Service")
        data_dir = values.get("--data-dir")
        if data_dir:
            volume, _ = self.mounted_file(w, c, data_dir)
            self.report.check(volume is not None and ("claim" in volume or
                                                      "persistentVolumeClaim" in volume), rel,
                              f"{name}: --data-dir {data_dir} is not on a persistent volume claim "
                              "(jobs and blobs would be lost with the pod)",
                              f"{name}: --data-dir is persistent")
        for flag in ("--listen", "--metrics-listen"):
            if flag not in values:
                self.report.fail(rel, f"{name}: {flag} is not set (the defaults listen on "
                                      "loopback only or not at all)")
                continue
            host, port = host_port(values[flag])
            self.report.check(host not in ("127.0.0.1", "localhost", "::1"), rel,
                              f"{name}: {flag} {values[flag]} listens on loopback: nothing "
                              "outside the pod can reach it", f"{name}: {flag} is reachable")
            self.report.check(resolve_port(c, port) is not None, rel,
                              f"{name}: {flag} port {port} is not a containerPort",
                              f"{name}: {flag} port is declared")
        listen_port = host_port(values.get("--listen", ":"))[1]
        for kind in ("readinessProbe", "livenessProbe"):
            probe = c.get(kind, {})
            ports = [resolve_port(c, probe[a].get("port")) for a in ("grpc", "tcpSocket") if a in probe]
            self.report.check(ports and ports[0] == listen_port, rel,
                              f"{name}: needs a {kind} (grpc or tcpSocket) on the --listen port "
                              f"{listen_port}", f"{name}: {kind} checks the gRPC port")

    def check_service(self, s, workloads):
        rel, name = s["_file"], s["metadata"]["name"]
        selector = s["spec"].get("selector", {})
        selected = [w for w in workloads
                    if labels_match(selector, w["spec"]["template"]["metadata"].get("labels", {}))]
        if not self.report.check(len(selected) == 1, rel,
                                 f"Service {name}: selector {selector} selects the pods of "
                                 f"{len(selected)} workloads ({', '.join(w['metadata']['name'] for w in selected) or 'none'}); "
                                 "it must select exactly one", f"Service {name} selects one workload"):
            return
        w = selected[0]
        for p in s["spec"].get("ports", []):
            target = p.get("targetPort", p["port"])
            self.report.check(any(resolve_port(c, target) for c in containers(w)), rel,
                              f"Service {name}: port {p.get('name', p['port'])} targets {target}, "
                              f"which no container of {w['metadata']['name']} declares",
                              f"Service {name}: port {p.get('name')} reaches {w['metadata']['name']}")
        s["_workload"] = w

    def service_port_to(self, s, container_port):
        """The Service's ports (dicts) whose target is container_port in its workload."""
        w = s.get("_workload")
        if w is None:
            return []
        return [p for p in s["spec"].get("ports", []) for c in containers(w)
                if resolve_port(c, p.get("targetPort", p["port"])) == container_port]

    def check_worker_target(self, w, c, services, server):
        rel, name = w["_file"], w["metadata"]["name"]
        target = c.get("_values", {}).get("--server")
        if not target:
            return
        host, port = host_port(target)
        labels = host.split(".")
        service = next((s for s in services if s["metadata"]["name"] == labels[0]), None)
        suffix_ok = len(labels) <= 2 or ".".join(labels[2:]) in ("svc", "svc.cluster.local")
        if not self.report.check(service is not None and suffix_ok, rel,
                                 f"{name}: --server {target} does not name a Service "
                                 f"({', '.join(s['metadata']['name'] for s in services)})",
                                 f"{name}: --server names Service {labels[0]}"):
            return
        _, server_c = server
        listen_port = host_port(server_c.get("_values", {}).get("--listen", ":"))[1]
        ok = (service.get("_workload") is server[0]
              and any(p["port"] == port for p in self.service_port_to(service, listen_port)))
        self.report.check(ok, rel, f"{name}: --server {target}: Service {labels[0]} has no port "
                          f"{port} leading to qopt-server's --listen port {listen_port}",
                          f"{name}: --server reaches qopt-server's gRPC port")

    # -- Docker ------------------------------------------------------------------------------

    # -- kubectl, when present ---------------------------------------------------------------

    def check_with_kubectl(self, base):
        sources = {(o["kind"], o["metadata"]["name"]): o["_file"] for o in base}
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            self.report.note("kubectl not found: kustomize rendering checked by this script only")
            return
        variants = [("kustomization.yaml", None)] + [(f"kustomization.yaml + {c}", c)
                                                     for c in self.components()]
        for label, component in variants:
            with tempfile.TemporaryDirectory() as tmp:
                kustomization = {"resources": [os.path.relpath(self.kube_dir, tmp)]}
                if component:
                    kustomization["components"] = [
                        os.path.relpath(os.path.join(self.kube_dir, component), tmp)]
                with open(os.path.join(tmp, "kustomization.yaml"), "w") as f:
                    yaml.safe_dump(kustomization, f)
                run = subprocess.run([kubectl, "kustomize", tmp], capture_output=True, text=True)
            if not self.report.check(run.returncode == 0, "deploy/kubernetes",
                                     f"kubectl kustomize ({label}): {run.stderr.strip()}",
                                     f"kubectl kustomize renders {label}"):
                continue
            objects = [o for o in yaml.safe_load_all(run.stdout) if o]
            for o in objects:
                source = sources.get((o["kind"], o["metadata"]["name"]), "deploy/kubernetes")
                o["_file"] = f"{source} (as kubectl kustomize renders {label})"
            self.check_objects(f"{label}, rendered by kubectl kustomize", objects)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server", help="qopt-server binary")
    parser.add_argument("worker", help="qopt-worker binary")
    parser.add_argument("--cli", default="", help="qopt binary (its libraries are checked too)")
    parser.add_argument("--source-dir", default=os.path.join(os.path.dirname(__file__), "..", ".."))
    args = parser.parse_args(argv)
    report = Report()
    Checker(os.path.abspath(args.source_dir), args.server, args.worker, args.cli, report).run()
    print(f"{report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
