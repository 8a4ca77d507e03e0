"""Checks of docker/: the Dockerfile's stages against the READMEs, the binaries' flags
and the libraries the built binaries load."""
import os
import re
import shutil
import subprocess

import cli_help
import dockerfile
from kube import host_port, image_name

# Packages every debian:12-slim image already has (apt itself depends on them).
BASE_PACKAGES = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g"}


class DockerChecks:
    """Mixed into check_manifests.Checker: uses its report, clis, binaries and images."""

    def check_docker(self):
        path = os.path.join(self.root, "docker", "Dockerfile")
        rel = self.src.rel(path)
        try:
            with open(path) as f:
                self.stages = dockerfile.parse(f.read())
        except (OSError, ValueError) as e:
            self.report.fail(rel, f"cannot read: {e}")
            return
        for stage in self.stages.values():
            for p in stage.problems:
                self.report.fail(rel, p)
            for ref in stage.copy_from:
                self.report.check(ref in self.stages, rel,
                                  f"stage {stage.name}: COPY --from={ref} names no stage",
                                  f"stage {stage.name}: COPY --from={ref} is a stage")
        for readme in ("docker/README.md", "deploy/README.md"):
            try:
                with open(os.path.join(self.root, readme)) as f:
                    text = f.read()
            except OSError:
                self.report.fail(readme, "missing")
                continue
            for target in sorted(set(re.findall(r"--target[ =]([\w.-]+)", text))):
                self.report.check(target in self.stages, readme,
                                  f"names stage {target!r}, which docker/Dockerfile lacks "
                                  f"(stages: {', '.join(s for s in self.stages if not s.startswith('#'))})",
                                  f"{readme}: stage {target} exists")
            if readme == "docker/README.md":
                for line in text.splitlines():
                    target = re.search(r"--target[ =]([\w.-]+)", line)
                    tag = re.search(r"(?:-t|--tag)[ =]([\w./-]+)(?::[\w.-]+)?", line)
                    if "docker build" in line and target and tag:
                        self.images[image_name(tag.group(1))] = target.group(1)
        for image, stage_name in sorted(self.images.items()):
            stage = self.stages.get(stage_name)
            if stage is not None:
                self.check_image_stage(rel, image, stage)

    def check_image_stage(self, rel, image, stage):
        entry = os.path.basename(stage.entrypoint[0]) if stage.entrypoint else ""
        if not self.report.check(entry == self.binary_for(image) and entry in self.clis, rel,
                                 f"stage {stage.name} (image {image}) does not start {image}",
                                 f"stage {stage.name}: ENTRYPOINT is {entry}"):
            return
        self.report.check(stage.entrypoint[0] in stage.copied, rel,
                          f"stage {stage.name}: ENTRYPOINT {stage.entrypoint[0]} is not copied "
                          "into the image", f"stage {stage.name}: {entry} is copied in")
        uid = (stage.user or "0").split(":")[0]
        if self.report.check(uid.isdigit() and int(uid) != 0, rel,
                             f"stage {stage.name}: USER must be a numeric non-root uid "
                             f"(Kubernetes runAsNonRoot checks it), not {stage.user!r}",
                             f"stage {stage.name}: runs as uid {uid}"):
            self.image_uids[image] = int(uid)
        values, problems = cli_help.parse_args(self.clis[entry], stage.entrypoint[1:] + (stage.cmd or []))
        for p in problems:
            self.report.fail(rel, f"stage {stage.name}: CMD: {p}")
        if not problems:
            self.report.ok(f"stage {stage.name}: CMD is accepted by {entry}")
        for flag in ("--data-dir", "--cache-dir"):
            if flag in values:
                self.report.check(values[flag] in stage.volumes, rel,
                                  f"stage {stage.name}: {flag} {values[flag]} is not a VOLUME",
                                  f"stage {stage.name}: {flag} is a VOLUME")
        for flag in ("--listen", "--metrics-listen"):
            if flag in values:
                port = host_port(values[flag])[1]
                self.report.check(port in stage.expose, rel,
                                  f"stage {stage.name}: {flag} port {port} is not in EXPOSE",
                                  f"stage {stage.name}: EXPOSE {port}")
        for path in stage.copied:
            name = os.path.basename(path)
            if self.binaries.get(name):
                self.check_runtime_packages(rel, stage, self.binaries[name])

    def check_runtime_packages(self, rel, stage, binary):
        """Every library the binary loads directly must come from a package the stage
        installs (or the base image has)."""
        if not (shutil.which("readelf") and shutil.which("ldd") and shutil.which("dpkg")):
            self.report.note(f"readelf, ldd or dpkg missing: runtime packages of {stage.name} unchecked")
            return
        elf = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True)
        needed = re.findall(r"\(NEEDED\).*\[(.+)\]", elf.stdout)
        ldd = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
        paths = dict(re.findall(r"^\s*(\S+) => (\S+)", ldd, re.M))
        owners = self.packages_of([paths[lib] for lib in needed if lib in paths])
        missing = []
        for lib in needed:
            if lib not in paths or paths[lib] == "not":
                missing.append(f"{lib} (not found by ldd)")
                continue
            owner = owners.get(paths[lib])
            if owner and owner not in stage.packages | BASE_PACKAGES:
                missing.append(f"{lib} (package {owner})")
        self.report.check(not missing, rel,
                          f"stage {stage.name} installs no package for {os.path.basename(binary)}'s "
                          f"{', '.join(missing)}",
                          f"stage {stage.name}: packages cover {os.path.basename(binary)}'s "
                          f"{len(needed)} libraries")

    @staticmethod
    def packages_of(paths):
        """{library path: Debian package that owns it}, with one dpkg call."""
        spellings = {}
        for path in paths:
            real = os.path.realpath(path)
            for p in (path, real):  # merged /usr: dpkg may know either spelling
                spellings[p] = path
                spellings[p[4:] if p.startswith("/usr/") else "/usr" + p] = path
        run = subprocess.run(["dpkg", "-S", *spellings], capture_output=True, text=True)
        owners = {}
        for line in run.stdout.splitlines():
            package, _, path = line.partition(": ")
            if path in spellings:
                owners[spellings[path]] = package.split(":")[0]
        return owners
