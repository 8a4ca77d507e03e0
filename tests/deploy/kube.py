"""Helpers over Kubernetes objects as parsed YAML, and JSON 6902 patches as kustomize
applies a Component's patches."""
import copy

WORKLOADS = ("StatefulSet", "Deployment")


def labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def host_port(address):
    host, _, port = str(address).rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else None


def pod_spec(obj):
    return obj["spec"]["template"]["spec"]


def containers(obj):
    return pod_spec(obj).get("containers", [])


def container_ports(container):
    return {p["containerPort"]: p.get("name") for p in container.get("ports", [])}


def resolve_port(container, port):
    """A port given by number or by name, as the container's port number (or None)."""
    ports = container_ports(container)
    if isinstance(port, int):
        return port if port in ports else None
    for number, name in ports.items():
        if name == port:
            return number
    return None


def image_name(image):
    """registry/path/name:tag -> name."""
    return image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]


def _pointer(path):
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def apply_json6902(obj, ops):
    """Applies add / replace / remove ops in place; raises on a path that does not apply."""
    for op in ops:
        *parents, last = _pointer(op["path"])
        node = obj
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if op["op"] == "add":
            if isinstance(node, list):
                node.insert(len(node) if last == "-" else int(last), copy.deepcopy(op["value"]))
            else:
                node[last] = copy.deepcopy(op["value"])
        elif op["op"] == "replace":
            if isinstance(node, list):
                node[int(last)] = copy.deepcopy(op["value"])
            else:
                if last not in node:
                    raise KeyError(op["path"])
                node[last] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del node[int(last) if isinstance(node, list) else last]
        else:
            raise ValueError(f"unsupported op {op['op']!r}")

