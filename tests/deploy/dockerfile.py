"""A small Dockerfile reader: stages, and per stage what a container of it starts with
(ENTRYPOINT, CMD, USER, EXPOSE, VOLUME, copied files, apt packages), following FROM
chains between stages as Docker does."""
import json
import re
import shlex
from dataclasses import dataclass, field


@dataclass
class Stage:
    name: str
    base: str
    entrypoint: list = None
    cmd: list = None
    user: str = None
    expose: set = field(default_factory=set)
    volumes: set = field(default_factory=set)
    copied: dict = field(default_factory=dict)  # path in the image -> (from stage, source)
    copy_from: list = field(default_factory=list)
    packages: set = field(default_factory=set)  # apt-get install arguments
    problems: list = field(default_factory=list)


def _instructions(text):
    """Yields (keyword, rest) with line continuations joined and comments dropped."""
    joined = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") and not joined:
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued RUN
        if line.rstrip().endswith("\\"):
            joined += line.rstrip()[:-1] + " "
            continue
        joined += line
        if joined.strip():
            keyword, _, rest = joined.strip().partition(" ")
            yield keyword.upper(), rest.strip()
        joined = ""


def _exec_form(stage, keyword, rest):
    try:
        value = json.loads(rest)
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        stage.problems.append(f"{keyword} of stage {stage.name!r} is not in exec (JSON) form, "
                              "so its arguments would go through /bin/sh")
        return shlex.split(rest)
    return value


def parse(text):
    """Returns {stage name: Stage} with inherited settings resolved."""
    stages, order = {}, []
    stage = None
    for keyword, rest in _instructions(text):
        if keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            base = words[0]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else f"#{len(order)}"
            stage = Stage(name, base)
            stages[name] = stage
            order.append(name)
        elif stage is None:
            continue
        elif keyword == "ENTRYPOINT":
            stage.entrypoint = _exec_form(stage, keyword, rest)
            stage.cmd = None  # Docker resets an inherited CMD when ENTRYPOINT is set
        elif keyword == "CMD":
            stage.cmd = _exec_form(stage, keyword, rest)
        elif keyword == "USER":
            stage.user = rest
        elif keyword == "EXPOSE":
            stage.expose |= {int(p.split("/")[0]) for p in rest.split()}
        elif keyword == "VOLUME":
            stage.volumes |= set(json.loads(rest) if rest.startswith("[") else rest.split())
        elif keyword in ("COPY", "ADD"):
            words = shlex.split(rest)
            source_stage = ""
            for w in words:
                if w.startswith("--from="):
                    source_stage = w.split("=", 1)[1]
                    stage.copy_from.append(source_stage)
            paths = [w for w in words if not w.startswith("--")]
            dest = paths[-1]
            for src in paths[:-1]:
                target = dest + src.rstrip("/").split("/")[-1] if dest.endswith("/") else dest
                stage.copied[target] = (source_stage, src)
        elif keyword == "RUN":
            for m in re.finditer(r"apt-get install((?:\s+[^\s&|;]+)+)", rest):
                stage.packages |= {w for w in m.group(1).split() if not w.startswith("-")}
    for name in order:
        _inherit(stages, stages[name], set())
    return stages


def _inherit(stages, stage, seen):
    parent = stages.get(stage.base)
    if parent is None or stage.name in seen:
        return
    _inherit(stages, parent, seen | {stage.name})
    if stage.entrypoint is None:
        stage.entrypoint = parent.entrypoint
        if stage.cmd is None:
            stage.cmd = parent.cmd
    if stage.user is None:
        stage.user = parent.user
    stage.expose |= parent.expose
    stage.volumes |= parent.volumes
    stage.packages |= parent.packages
    stage.copied = {**parent.copied, **stage.copied}
