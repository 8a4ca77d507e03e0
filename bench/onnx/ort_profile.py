"""What the ONNX bench measures to explain its timings: the weight zero points of a QDQ
export, per layer and layer kind, and where ONNX Runtime's time goes in a profiled session
(run_onnx.js --profile), per op type and per node, with each node traced back to the
exported layer whose weights it runs."""
import collections

import numpy as np
import onnx
from onnx import numpy_helper


def _weighted_layers(graph):
    """(node, weight DequantizeLinear) for each Conv / Gemm / MatMul whose second input is
    a dequantized initializer."""
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name for i in graph.initializer}
    for n in graph.node:
        if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1:
            dq = producer.get(n.input[1])
            if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in inits:
                yield n, dq


def _kind(node, weight_shape):
    """"depthwise" for a conv with one input channel per group and as many groups as
    output channels, "conv" for other convs, else the op type in lower case."""
    if node.op_type != "Conv":
        return node.op_type.lower()
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    return "depthwise" if group > 1 and weight_shape[1] == 1 and group == weight_shape[0] else "conv"


def weight_zero_points(model_path, float_path=None):
    """Per weighted layer of a QDQ export: kind, output channels, how many of them have a
    non-zero weight zero point; with `float_path` (the FP32 export, same initializer
    names) also how many channels have float weights all >= 0 and how many of those have
    a non-zero zero point. Plus a summary per kind."""
    graph = onnx.load(model_path).graph
    arrays = {i.name: i for i in graph.initializer}
    floats = {i.name: i for i in onnx.load(float_path).graph.initializer} if float_path else {}
    layers = []
    for node, dq in _weighted_layers(graph):
        weight = numpy_helper.to_array(arrays[dq.input[0]])
        zero_point = numpy_helper.to_array(arrays[dq.input[2]]) if len(dq.input) > 2 and dq.input[2] in arrays else None
        nonzero = (zero_point.reshape(-1) != 0) if zero_point is not None else np.zeros(weight.shape[0], bool)
        if nonzero.size == 1:
            nonzero = np.repeat(nonzero, weight.shape[0])
        row = {"layer": node.name, "inputs": [dq.input[0]] + list(node.input[1:]), "kind": _kind(node, weight.shape),
               "channels": int(weight.shape[0]), "nonzero_zero_point_channels": int(nonzero.sum()),
               "zero_point_values": sorted({int(v) for v in zero_point.reshape(-1)}) if zero_point is not None else [0]}
        if node.input[1] in floats:
            w = numpy_helper.to_array(floats[node.input[1]])
            nonneg = (w.reshape(w.shape[0], -1) >= 0).all(axis=1)
            row["channels_all_weights_nonnegative"] = int(nonneg.sum())
            row["nonzero_zero_point_channels_all_weights_nonnegative"] = int((nonneg & nonzero).sum())
        layers.append(row)
    summary = collections.OrderedDict()
    for row in layers:
        s = summary.setdefault(row["kind"], collections.Counter())
        s["layers"] += 1
        s["channels"] += row["channels"]
        s["layers_with_nonzero_zero_point"] += row["nonzero_zero_point_channels"] > 0
        for key in ("nonzero_zero_point_channels", "channels_all_weights_nonnegative",
                    "nonzero_zero_point_channels_all_weights_nonnegative"):
            s[key] += row.get(key, 0)
    return {"by_kind": {k: dict(v) for k, v in summary.items()}, "layers": layers}


def _node_layers(optimized_path, zero_points):
    """Optimized node name -> exported layer row, matched by an initializer the node reads:
    the quantized weight (int8 graphs: ORT's fused nodes read it under its own name) or,
    in float graphs where ORT reorders weights into new initializers, the bias. Nodes
    whose weight and bias were both renamed stay unmatched."""
    by_input = {}
    for row in (zero_points or {"layers": []})["layers"]:
        for name in row["inputs"]:
            by_input[name] = row
    out = {}
    for n in onnx.load(optimized_path).graph.node:
        row = next((by_input[i] for i in n.input if i in by_input), None)
        if row is not None:
            out[n.name] = row
    return out


def summarize_profile(events, optimized_path, zero_points=None, top=3):
    """Node time of a profiled session, the first run left out (it allocates and packs).
    Returns ms per run, the share per op type, the `top` nodes and, per layer kind, the
    time of nodes whose layer has a non-zero weight zero point and of those that have none."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    if len(runs) < 2:
        raise ValueError("the profile holds %d runs, need at least 2" % len(runs))
    timed = runs[1:]
    in_timed = lambda ts: any(a <= ts <= b for a, b in timed)
    node_us = collections.Counter()
    op_of = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and in_timed(e["ts"]):
            name = e["name"][:-len("_kernel_time")]
            node_us[name] += e["dur"]
            op_of[name] = e["args"].get("op_name", "?")
    total = sum(node_us.values())
    per_op = collections.Counter()
    for name, us in node_us.items():
        per_op[op_of[name]] += us
    layers = _node_layers(optimized_path, zero_points)
    ms = lambda us: round(us / 1000.0 / len(timed), 3)
    share = lambda us: round(us / total, 4)

    def node_row(name, us):
        row = {"node": name, "op": op_of[name], "ms_per_run": ms(us), "share": share(us)}
        if name in layers:
            layer = layers[name]
            row.update({"layer": layer["layer"], "kind": layer["kind"], "channels": layer["channels"],
                        "nonzero_zero_point_channels": layer["nonzero_zero_point_channels"]})
        return row

    by_zero_point = collections.defaultdict(lambda: collections.Counter())
    for name, us in node_us.items():
        if name in layers:
            key = "nonzero_zero_point" if layers[name]["nonzero_zero_point_channels"] else "zero_points_all_0"
            by_zero_point[layers[name]["kind"]][key] += us
            by_zero_point[layers[name]["kind"]][key + "_nodes"] += 1
    return {
        "runs": len(timed), "node_ms_per_run": ms(total),
        "wall_ms_per_run": round(sum(b - a for a, b in timed) / 1000.0 / len(timed), 3),
        "share_by_op_type": {op: share(us) for op, us in per_op.most_common()},
        "ms_by_op_type": {op: ms(us) for op, us in per_op.most_common()},
        "top_nodes": [node_row(n, us) for n, us in node_us.most_common(top)],
        "by_layer_kind": {kind: {k: (ms(v) if not k.endswith("_nodes") else v) for k, v in c.items()}
                          for kind, c in sorted(by_zero_point.items())},
        "layer_ms_per_run": {layers[n]["layer"]: ms(us) for n, us in node_us.items() if n in layers},
    }
