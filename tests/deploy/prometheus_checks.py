"""Checks of deploy/prometheus/prometheus.yml against the Service and the server's
--metrics-listen, and with promtool when it is on the PATH."""
import os
import re
import shutil
import subprocess
import tempfile

import yaml

from kube import WORKLOADS, containers, host_port, image_name

# prometheus::Exposer(address) serves on this path (prometheus-cpp's default, used by
# server/main.cc).
METRICS_PATH = "/metrics"


class PrometheusChecks:
    """Mixed into check_manifests.Checker: uses its report, sources and service helpers."""

    def check_prometheus(self, objects):
        path = os.path.join(self.root, "deploy", "prometheus", "prometheus.yml")
        rel = self.src.rel(path)
        docs = self.src.load_yaml(path)
        if not docs:
            self.report.fail(rel, "missing or empty")
            return
        config = docs[0]
        server = next((c for w in objects if w["kind"] in WORKLOADS for c in containers(w)
                       if image_name(c.get("image", "")) == "qopt-server"), None)
        services = [o for o in objects if o["kind"] == "Service"]
        if server is None or "--metrics-listen" not in server.get("_values", {}):
            self.report.fail(rel, "no qopt-server container with --metrics-listen to scrape")
            return
        metrics_port = host_port(server.get("_values", {}).get("--metrics-listen", ":"))[1]
        service = next((s for s in services if s.get("_workload") is not None
                        and self.service_port_to(s, metrics_port)), None)
        if not self.report.check(service, rel, f"no Service exposes qopt-server's metrics port "
                                 f"{metrics_port}", "a Service exposes the metrics port"):
            return
        metrics_ports = self.service_port_to(service, metrics_port)
        annotations = service["metadata"].get("annotations", {})
        srel = service["_file"]
        if annotations.get("prometheus.io/scrape") == "true":
            self.report.check(annotations.get("prometheus.io/port") == str(metrics_port), srel,
                              f"annotation prometheus.io/port {annotations.get('prometheus.io/port')} "
                              f"is not the metrics port {metrics_port}",
                              "prometheus.io/port is the metrics port")
            self.report.check(annotations.get("prometheus.io/path", METRICS_PATH) == METRICS_PATH,
                              srel, f"annotation prometheus.io/path is not {METRICS_PATH}",
                              f"prometheus.io/path is {METRICS_PATH}")
        jobs = config.get("scrape_configs", [])
        static = [j for j in jobs if j.get("static_configs")]
        kube = [j for j in jobs if j.get("kubernetes_sd_configs")]
        self.report.check(static and kube, rel, "needs a static job and a kubernetes_sd_configs job",
                          f"{rel} has static and Kubernetes jobs")
        for j in static:
            self.report.check(j.get("metrics_path", METRICS_PATH) == METRICS_PATH, rel,
                              f"job {j['job_name']}: metrics_path is not {METRICS_PATH}",
                              f"job {j['job_name']}: metrics_path")
            for sc in j["static_configs"]:
                for t in sc.get("targets", []):
                    port = host_port(t)[1]
                    self.report.check(port in [p["port"] for p in metrics_ports], rel,
                                      f"job {j['job_name']}: target {t} is not on the metrics port "
                                      f"{[p['port'] for p in metrics_ports]} of Service "
                                      f"{service['metadata']['name']}",
                                      f"job {j['job_name']}: target {t} is the metrics port")
        for j in kube:
            for r in j.get("relabel_configs", []):
                if r.get("action", "replace") != "keep":
                    continue
                sources = r.get("source_labels", [])
                regex = re.compile(str(r.get("regex", "(.*)")))
                if sources == ["__meta_kubernetes_endpoint_port_name"]:
                    self.report.check(any(regex.fullmatch(p.get("name", "")) for p in metrics_ports),
                                      rel, f"job {j['job_name']}: keeps endpoint ports named "
                                      f"{regex.pattern}, but the Service's metrics port is named "
                                      f"{[p.get('name') for p in metrics_ports]}",
                                      f"job {j['job_name']}: keeps the metrics port")
                m = re.fullmatch(r"__meta_kubernetes_service_annotation_(\w+)", sources[0]) \
                    if len(sources) == 1 else None
                if m:
                    value = next((v for k, v in annotations.items()
                                  if re.sub(r"[^a-zA-Z0-9_]", "_", k) == m.group(1)), "")
                    self.report.check(regex.fullmatch(value), rel,
                                      f"job {j['job_name']}: keeps Services whose annotation "
                                      f"{m.group(1)} matches {regex.pattern}; "
                                      f"{service['metadata']['name']} has {value!r}",
                                      f"job {j['job_name']}: keeps Service "
                                      f"{service['metadata']['name']}")
        self.check_promtool(path, config)

    def check_promtool(self, path, config):
        rel = self.src.rel(path)
        promtool = shutil.which("promtool")
        if promtool is None:
            self.report.note("promtool not found: prometheus.yml checked by this script only")
            return
        run = subprocess.run([promtool, "check", "config", path], capture_output=True, text=True)
        if run.returncode != 0 and "kubernetes_sd_configs not found" in run.stdout + run.stderr:
            # Debian's Prometheus is built without Kubernetes discovery: check the rest.
            self.report.note("this promtool has no Kubernetes service discovery: "
                             "checking the file without its kubernetes_sd_configs jobs")
            trimmed = dict(config, scrape_configs=[j for j in config.get("scrape_configs", [])
                                                   if "kubernetes_sd_configs" not in j])
            with tempfile.TemporaryDirectory() as tmp:
                copy_path = os.path.join(tmp, "prometheus.yml")
                with open(copy_path, "w") as f:
                    yaml.safe_dump(trimmed, f)
                run = subprocess.run([promtool, "check", "config", copy_path],
                                     capture_output=True, text=True)
        self.report.check(run.returncode == 0, rel,
                          f"promtool check config: {(run.stdout + run.stderr).strip()}",
                          "promtool check config")
