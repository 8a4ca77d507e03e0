#!/usr/bin/python3
"""ONNX export in ONNX Runtime: int8 (QDQ) against FP32 speed, and how close ORT's int8
kernels come to qopt's simulation, on the zoo models and the Fashion-MNIST test set, each
model quantized twice: with qopt's default quantsim config and with
examples/quantsim/onnxruntime_signed_weights.json (the same, but AIMET's
unsigned_symmetric off, so every weight zero point is 0).

    bench/onnx/run_onnx_bench.py [--worker build/worker/qopt-worker] [--models resnet18,mobilenet_v2]
                                 [--variants default,signed_weights] [--rounds 6] [--batch1-runs 100]
                                 [--batch64-runs 12] [--profile-runs 10] [--threads nproc]

Per model and variant, one qopt job: fold_batch_norm, export (float.onnx: FP32, BN folded),
calibrate (W8A8 per-channel, 256 training images), evaluate (the 10 000 test images),
export (model.onnx: QDQ, model.pt: TorchScript with fake quant, encodings). Then on the
10 000 test images:
  - sim_top1: the exported model.pt run by PyTorch (qopt's simulation); the job's own
    evaluate top-1 and FP32 top-1 are quoted beside it;
  - ort_top1: model.onnx in ONNX Runtime with its default graph optimizations (Q/DQ
    fused into int8 kernels where ORT can); ort_fp32_top1: float.onnx in ORT;
  - max |ORT - simulation| in steps of the output encoding, with optimizations on and off
    (off: Q/DQ run as the float ops the standard defines);
  - op counts of the graphs ORT runs after optimization (run_onnx.js --save-optimized);
  - the same job with quantization.kernels onnxruntime_int8 (the simulation computing
    conv, add and pooling with ORT's int8 kernels' arithmetic): its top-1, and its max
    |ORT - simulation| (optimizations on) in output steps and share of differing outputs.
Timing: float.onnx and each variant's model.onnx in the same run, rounds interleaved (the
order rotates and flips between rounds) so machine noise hits all alike; each round is
one ORT session per graph and batch size; the first run of a session and the next
--warmup runs are not timed. Latency is the median at batch 1; throughput is 64 / median
time at batch 64. FP32 is timed once per model (the variants' float.onnx are compared
byte for byte and the result recorded).
Explanation: per model and variant, the weight channels with a non-zero zero point per
layer kind (depthwise conv, other conv, gemm) in model.onnx, and one profiled session
(run_onnx.js --profile; the first run left out) of model.onnx and float.onnx at batch 64
and at batch 1: share of node time per op type, the top 3 nodes, time per layer kind
split by zero point.
Writes bench/results/onnx.json (one object per model and variant) and onnx.md; the md's
explanation is written from those numbers. node is $QOPT_NODE (default: node on the PATH).
"""
import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "zoo"))
import fashion_mnist  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ort_profile  # noqa: E402

FMNIST = fashion_mnist.ROOT
PREPROCESS = {"mean": [fashion_mnist.MEAN], "std": [fashion_mnist.STD]}
RUNNER = os.path.join(ROOT, "tools", "onnxruntime", "run_onnx.js")
ORT_BATCH = 1000
CALIBRATION_IMAGES = 256
# Quantsim config per variant (None: qopt's built-in default, AIMET's defaults).
VARIANTS = {"default": None,
            "signed_weights": os.path.join(ROOT, "examples", "quantsim", "onnxruntime_signed_weights.json")}
# Op types counted in ORT's optimized graphs; anything else lands in "other".
COUNTED_OPS = ("QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul", "QGemm", "QLinearAdd",
               "QLinearGlobalAveragePool", "QuantizeLinear", "DequantizeLinear", "Conv", "FusedConv", "Gemm",
               "Add", "Relu", "Clip", "Transpose", "ReorderInput", "ReorderOutput")


def run_ort(model, inputs, out_dir, threads, extra=()):
    """Runs run_onnx.js; returns (stdout, stderr)."""
    r = subprocess.run([os.environ.get("QOPT_NODE", "node"), RUNNER, model, out_dir] + list(inputs) +
                       ["--threads", str(threads)] + list(extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    if r.returncode != 0:
        raise RuntimeError("run_onnx failed on %s: %s" % (model, r.stderr.strip()))
    return r.stdout, r.stderr


def output_file(model):
    """Where run_onnx.js writes the model's (first) output."""
    name = onnx.load(model).graph.output[0].name
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".npy"


def ort_outputs(model, x, tmp, tag, threads, optimize=True, save_optimized=None):
    """ORT's output for all of `x`, in batches of ORT_BATCH; the first batch's session
    writes its optimized graph to `save_optimized`."""
    outs = []
    for i in range(0, x.shape[0], ORT_BATCH):
        d = os.path.join(tmp, "%s_%d" % (tag, i))
        os.makedirs(d, exist_ok=True)
        np.save(os.path.join(d, "in.npy"), x[i:i + ORT_BATCH].numpy())
        extra = ([] if optimize else ["--no-optimize"]) + (["--save-optimized", save_optimized] if
                                                            save_optimized and i == 0 else [])
        run_ort(model, [os.path.join(d, "in.npy")], d, threads, extra)
        outs.append(torch.from_numpy(np.load(os.path.join(d, output_file(model)))))
    return torch.cat(outs)


def run_job(worker, name, config, out, tmp, threads, kernels=None):
    """One qopt job for zoo model `name` with quantsim config file `config` (None: the
    built-in default) and the simulation's `kernels` (None: fake_quant); returns the
    evaluate step's figures and the job's seconds."""
    data = lambda images, **extra: dict({"path": FMNIST + "/" + images, "preprocess": PREPROCESS}, **extra)
    quantization = {"per_channel": True}
    if config:
        quantization["config_path"] = config
    if kernels:
        quantization["kernels"] = kernels
    recipe = {
        "name": "onnx_bench_" + name, "model": {"path": os.path.join(ROOT, "zoo", name + ".pt")},
        "calibration_data": data("train-images-idx3-ubyte.gz", max_samples=CALIBRATION_IMAGES, batch_size=64),
        "evaluation_data": data("t10k-images-idx3-ubyte.gz", labels_path=FMNIST + "/t10k-labels-idx1-ubyte.gz",
                                batch_size=500),
        "quantization": quantization, "num_threads": threads,
        "steps": [{"fold_batch_norm": {}}, {"export": {"onnx": True, "prefix": "float"}}, {"calibrate": {}},
                  {"evaluate": {}}, {"export": {"onnx": True, "torchscript": True, "encodings": True}}],
    }
    path = os.path.join(tmp, os.path.basename(out) + ".json")
    with open(path, "w") as f:
        json.dump(recipe, f)
    start = time.perf_counter()
    subprocess.run([worker, "run", "--quiet", "--recipe", path, "--out", out], check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    with open(os.path.join(out, "report.json")) as f:
        report = json.load(f)
    return [s for s in report["steps"] if s["step"] == "evaluate"][0]["figures"], seconds


def output_step(out):
    """Scale of the QDQ model's output encoding (the simulation's output grid step)."""
    output = onnx.load(os.path.join(out, "model.onnx")).graph.output[0].name
    with open(os.path.join(out, "model.onnx.encodings")) as f:
        encodings = json.load(f)["activation_encodings"]
    return encodings[output[:-len("_dequantized")]][0]["scale"]


def op_counts(model):
    counts = collections.Counter(n.op_type if n.op_type in COUNTED_OPS else "other" for n in onnx.load(model).graph.node)
    return dict(sorted(counts.items()))


def float_conv_activations(model):
    """For each float Conv left in ORT's optimized graph: the element types of the Q/DQ
    pairs on its input and output (int8 where ORT kept the export's type, uint8 where it
    rewrote the pair)."""
    g = onnx.load(model).graph
    inits = {i.name: i.data_type for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers = collections.defaultdict(list)
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)
    kind = lambda n: onnx.TensorProto.DataType.Name(inits[n.input[2]]).lower() if (
        n is not None and len(n.input) > 2 and n.input[2] in inits) else "float"
    rows = []
    for n in g.node:
        if n.op_type == "Conv" and n.domain in ("", "ai.onnx"):
            q_out = [c for c in consumers[n.output[0]] if c.op_type == "QuantizeLinear"]
            rows.append({"name": n.name, "input": kind(producer.get(n.input[0])),
                         "output": kind(q_out[0]) if q_out else "float"})
    return rows


def top1(y, labels):
    return round((y.argmax(1) == labels).float().mean().item(), 4)


def simulated(out, x):
    """The job's simulation: its exported model.pt run by PyTorch."""
    with torch.no_grad():
        return torch.cat([torch.jit.load(os.path.join(out, "model.pt"))(x[i:i + 500]) for i in range(0, len(x), 500)])


def int8_accuracy(args, tag, out, x, labels, tmp, kernels_out):
    """The simulation (model.pt) against model.onnx in ORT, optimizations on and off; and
    the simulation with ONNX Runtime's int8 kernels (the job in `kernels_out`) against ORT."""
    sim = simulated(out, x)
    kernels_sim = simulated(kernels_out, x)
    optimized = os.path.join(tmp, tag + "_model.optimized.onnx")
    ort = ort_outputs(os.path.join(out, "model.onnx"), x, tmp, tag + "_int8", args.threads, save_optimized=optimized)
    ort_off = ort_outputs(os.path.join(out, "model.onnx"), x, tmp, tag + "_int8_off", args.threads, optimize=False)
    step = output_step(out)
    return {
        "sim_top1": top1(sim, labels), "ort_top1": top1(ort, labels), "ort_top1_optimizations_off": top1(ort_off, labels),
        "max_abs_diff_in_output_steps": round(((ort - sim).abs() / step).max().item(), 3),
        "max_abs_diff_in_output_steps_optimizations_off": round(((ort_off - sim).abs() / step).max().item(), 3),
        "outputs_off_by_half_step_or_more": round((ort - sim).abs().ge(step / 2).float().mean().item(), 4),
        "outputs_off_by_half_step_or_more_optimizations_off": round(
            (ort_off - sim).abs().ge(step / 2).float().mean().item(), 4),
        "top1_agreement_ort_vs_sim": round((ort.argmax(1) == sim.argmax(1)).float().mean().item(), 4),
        "sim_int8_kernels_top1": top1(kernels_sim, labels),
        "max_abs_diff_in_output_steps_int8_kernels": round(((ort - kernels_sim).abs() / step).max().item(), 3),
        "outputs_differing_int8_kernels": round((ort - kernels_sim).abs().gt(step / 1000).float().mean().item(), 6),
        "model_onnx_same_with_int8_kernels": same_bytes(os.path.join(out, "model.onnx"),
                                                        os.path.join(kernels_out, "model.onnx")),
        "output_step": step,
        "optimized_int8_ops": op_counts(optimized), "exported_int8_ops": op_counts(os.path.join(out, "model.onnx")),
        "float_convs_left": float_conv_activations(optimized),
    }


def fp32_accuracy(args, tag, out, x, labels, tmp):
    float_optimized = os.path.join(tmp, tag + "_float.optimized.onnx")
    fp32 = ort_outputs(os.path.join(out, "float.onnx"), x, tmp, tag + "_fp32", args.threads,
                       save_optimized=float_optimized)
    return {"ort_fp32_top1": top1(fp32, labels), "optimized_fp32_ops": op_counts(float_optimized)}


def timed(model, inputs, threads, runs, warmup):
    stdout, _ = run_ort(model, [inputs], tempfile.mkdtemp(dir=os.path.dirname(inputs)), threads,
                        ["--repeat", str(runs + warmup)])
    return json.loads(stdout)["ms"][warmup:]


def batch_inputs(x, tmp):
    inputs = {}
    for batch in (1, 64):
        inputs[batch] = os.path.join(tmp, "batch%d.npy" % batch)
        np.save(inputs[batch], x[:batch].numpy())
    return inputs


def timing(args, graphs, inputs):
    """Interleaved rounds over `graphs` (kind -> .onnx path; the order rotates each round
    and flips every other round); median milliseconds per run by (kind, batch) and the
    number of timed runs per kind and batch."""
    kinds = list(graphs)
    ms = collections.defaultdict(list)
    for r in range(args.rounds):
        order = kinds[r % len(kinds):] + kinds[:r % len(kinds)]
        for kind in (order if (r // len(kinds)) % 2 == 0 else order[::-1]):
            ms[kind, 1] += timed(graphs[kind], inputs[1], args.threads, args.batch1_runs, args.warmup)
            ms[kind, 64] += timed(graphs[kind], inputs[64], args.threads, args.batch64_runs, max(1, args.warmup // 5))
    return {k: statistics.median(v) for k, v in ms.items()}, {"batch1": len(ms[kinds[0], 1]),
                                                              "batch64": len(ms[kinds[0], 64])}


def timing_row(med, kind, runs):
    return {
        "fp32_ms_batch1": round(med["fp32", 1], 3), "int8_ms_batch1": round(med[kind, 1], 3),
        "int8_over_fp32_latency_batch1": round(med[kind, 1] / med["fp32", 1], 3),
        "fp32_images_per_s_batch64": round(64e3 / med["fp32", 64], 1),
        "int8_images_per_s_batch64": round(64e3 / med[kind, 64], 1),
        "int8_over_fp32_throughput_batch64": round(med["fp32", 64] / med[kind, 64], 3),
        "fp32_ms_batch64": round(med["fp32", 64], 2), "int8_ms_batch64": round(med[kind, 64], 2),
        "timed_runs": runs,
    }


def profile(args, model, inputs, runs, tmp, tag, zero_points):
    """One session of `model` on `inputs` under ORT's profiler (`runs` runs after the
    first), summarized by ort_profile.summarize_profile."""
    d = os.path.join(tmp, tag + "_profile")
    os.makedirs(d, exist_ok=True)
    optimized = os.path.join(d, "optimized.onnx")
    _, stderr = run_ort(model, [inputs], d, args.threads, ["--repeat", str(runs), "--profile",
                                                           os.path.join(d, "trace"), "--save-optimized", optimized])
    trace = [l for l in stderr.splitlines() if l.startswith("profile: ")][-1][len("profile: "):]
    with open(trace) as f:
        return ort_profile.summarize_profile(json.load(f), optimized, zero_points)


def same_bytes(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


def ort_version():
    with open(os.path.join(ROOT, "tools", "onnxruntime", "node_modules", "onnxruntime-node", "package.json")) as f:
        return json.load(f)["version"]


def bench_model(args, name, variants, x, labels, tmp):
    """All variants of one model; one row per variant."""
    rows, outs = [], {}
    for variant in variants:
        outs[variant] = os.path.join(tmp, "%s_%s" % (name, variant))
        evaluated, job_seconds = run_job(args.worker, name, VARIANTS[variant], outs[variant], tmp, args.threads)
        run_job(args.worker, name, VARIANTS[variant], outs[variant] + "_int8_kernels", tmp, args.threads,
                kernels="onnxruntime_int8")
        config = VARIANTS[variant]
        rows.append({"model": name, "variant": variant,
                     "quantsim_config": os.path.relpath(config, ROOT) if config else "built-in default",
                     "job_evaluate_top1": evaluated["top1"], "job_fp32_top1": evaluated["fp32_top1"],
                     "job_seconds": round(job_seconds, 1)})
    first = outs[variants[0]]
    fp32 = fp32_accuracy(args, name, first, x, labels, tmp)
    inputs = batch_inputs(x, tmp)
    fp32_profile = {}
    for row, variant in zip(rows, variants):
        out = outs[variant]
        tag = "%s_%s" % (name, variant)
        row.update(int8_accuracy(args, tag, out, x, labels, tmp, out + "_int8_kernels"))
        row.update(fp32)
        row["float_onnx_same_as_%s" % variants[0]] = same_bytes(os.path.join(out, "float.onnx"),
                                                               os.path.join(first, "float.onnx"))
        row["model_onnx_same_as_%s" % variants[0]] = same_bytes(os.path.join(out, "model.onnx"),
                                                               os.path.join(first, "model.onnx"))
        zero_points = ort_profile.weight_zero_points(os.path.join(out, "model.onnx"), os.path.join(out, "float.onnx"))
        row["weight_zero_points"] = {"by_kind": zero_points["by_kind"],
                                     "layers_with_nonzero": [l for l in zero_points["layers"]
                                                             if l["nonzero_zero_point_channels"]]}
        for batch, runs in ((64, args.profile_runs), (1, args.profile_runs * 5)):
            row["profile_int8_batch%d" % batch] = profile(args, os.path.join(out, "model.onnx"), inputs[batch], runs,
                                                          tmp, "%s_int8_%d" % (tag, batch), zero_points)
            if fp32_profile.get(batch) is None:
                fp32_profile[batch] = profile(args, os.path.join(first, "float.onnx"), inputs[batch], runs, tmp,
                                              "%s_fp32_%d" % (name, batch), zero_points)
            row["profile_fp32_batch%d" % batch] = fp32_profile[batch]
    load_before = os.getloadavg()[0]
    graphs = {"fp32": os.path.join(first, "float.onnx")}
    graphs.update({v: os.path.join(outs[v], "model.onnx") for v in variants})
    med, runs = timing(args, graphs, inputs)
    load_after = os.getloadavg()[0]
    for row, variant in zip(rows, variants):
        row.update(timing_row(med, variant, runs))
        row.update({"load_1min_before_timing": round(load_before, 2), "load_1min_after_timing": round(load_after, 2),
                    "threads": args.threads, "cores": os.cpu_count(), "onnxruntime": ort_version(),
                    "test_images": len(x), "calibration_images": CALIBRATION_IMAGES})
        print(json.dumps({k: v for k, v in row.items() if not k.endswith("_ops") and k not in (
            "float_convs_left", "weight_zero_points") and not k.startswith("profile_")}), flush=True)
    return rows


def ops_line(ops):
    return ", ".join("%s %d" % kv for kv in sorted(ops.items(), key=lambda kv: -kv[1]))


def pct(x):
    return "%.1f%%" % (100 * x)


def share_line(profile, floor=0.01):
    """Op types with their share of node time; those under `floor` summed as "other"."""
    shares = profile["share_by_op_type"]
    parts = ["%s %s" % (op, pct(v)) for op, v in shares.items() if v >= floor]
    rest = sum(v for v in shares.values() if v < floor)
    return ", ".join(parts + (["other %s" % pct(rest)] if rest > 0 else []))


def node_text(n):
    where = ""
    if "kind" in n:
        where = ", %s %s, %d of %d weight channels with a non-zero zero point" % (
            n["kind"], n["layer"], n["nonzero_zero_point_channels"], n["channels"])
    return "%s (%s%s) %.2f ms, %s" % (n["node"], n["op"], where, n["ms_per_run"], pct(n["share"]))


def zero_point_cell(by_kind, kind):
    k = by_kind.get(kind)
    if not k:
        return "-"
    return "%d of %d (in %d of %d layers)" % (k["nonzero_zero_point_channels"], k["channels"],
                                              k["layers_with_nonzero_zero_point"], k["layers"])


def variant_label(variant):
    return variant.replace("_", " ")


def explanation(model_rows):
    """Sentences about one model, each from a figure in `model_rows` (its variants)."""
    name = model_rows[0]["model"]
    out = []
    ratios = "; ".join("%s: int8 / FP32 throughput at batch 64 %.2f (%.0f vs %.0f images/s), latency at batch 1 "
                       "%.2f (%.3f vs %.3f ms)" % (
                           variant_label(r["variant"]), r["int8_over_fp32_throughput_batch64"],
                           r["int8_images_per_s_batch64"], r["fp32_images_per_s_batch64"],
                           r["int8_over_fp32_latency_batch1"], r["int8_ms_batch1"], r["fp32_ms_batch1"])
                       for r in model_rows)
    out.append("**%s.** Measured: %s." % (name, ratios))
    base = model_rows[0]
    nonzero = base["weight_zero_points"]["layers_with_nonzero"]
    if not nonzero:
        out.append("No weight channel of the %s export has a non-zero zero point, so unsigned_symmetric changes "
                   "nothing here." % variant_label(base["variant"]))
        for r in model_rows[1:]:
            if r.get("model_onnx_same_as_%s" % base["variant"]):
                out.append("The %s model.onnx is byte-identical to the %s one, so the gap between their timings "
                           "above is run-to-run noise of this machine." % (variant_label(r["variant"]),
                                                                     variant_label(base["variant"])))
    else:
        layers = [l["layer"] for l in nonzero]
        kinds = collections.Counter(l["kind"] for l in nonzero)
        by_kind = base["weight_zero_points"]["by_kind"]
        nonneg = sum(k["channels_all_weights_nonnegative"] for k in by_kind.values())
        nonneg_nonzero = sum(k["nonzero_zero_point_channels_all_weights_nonnegative"] for k in by_kind.values())
        nonzero_channels = sum(k["nonzero_zero_point_channels"] for k in by_kind.values())
        out.append("In the %s export %d layers (%s) have weight channels with a non-zero zero point (%s channels; "
                   "zero point values in these layers %s). float.onnx has %d channels whose weights are all >= 0; "
                   "%d of the %d channels with a non-zero zero point are among them (AIMET's unsigned symmetric grid "
                   "for such channels, written as int8 with an offset zero point)." % (
                       variant_label(base["variant"]), len(layers), ", ".join("%d %s" % (v, k) for k, v in kinds.items()),
                       ", ".join("%s %d/%d" % (l["layer"], l["nonzero_zero_point_channels"], l["channels"])
                                 for l in nonzero),
                       "/".join(str(v) for v in sorted({v for l in nonzero for v in l["zero_point_values"]})),
                       nonneg, nonneg_nonzero, nonzero_channels))
        for r in model_rows:
            prof = r["profile_int8_batch64"]
            ms = sum(prof["layer_ms_per_run"].get(l, 0.0) for l in layers)
            sentence = ("Profile, %s, batch 64: these %d layers took %.2f ms of %.2f ms int8 node time per run (%s)" % (
                variant_label(r["variant"]), len(layers), ms, prof["node_ms_per_run"],
                pct(ms / prof["node_ms_per_run"])))
            left = r["weight_zero_points"]["by_kind"]
            left_channels = sum(k["nonzero_zero_point_channels"] for k in left.values())
            sentence += ("; the %s export has %d weight channels with a non-zero zero point" % (
                variant_label(r["variant"]), left_channels) if r is not base else "")
            dw = prof["by_layer_kind"].get("depthwise", {})
            if r is base and "zero_points_all_0" in dw:
                sentence += ("; the other %d depthwise convs, all zero points 0, took %.2f ms together" % (
                    dw["zero_points_all_0_nodes"], dw["zero_points_all_0"]))
            out.append(sentence + ".")
        fp = base["profile_fp32_batch64"]["layer_ms_per_run"]
        if all(l in fp for l in layers):
            out.append("The same %d layers in the FP32 profile: %.2f ms of %.2f ms per run." % (
                len(layers), sum(fp[l] for l in layers), base["profile_fp32_batch64"]["node_ms_per_run"]))
    for r in model_rows:
        prof, fprof = r["profile_int8_batch64"], r["profile_fp32_batch64"]
        if r["int8_over_fp32_throughput_batch64"] < 1.0:
            out.append("Int8 is not faster at batch 64 in %s: profiled int8 node time %.2f ms vs FP32 %.2f ms; the "
                       "int8 top node is %s." % (variant_label(r["variant"]), prof["node_ms_per_run"],
                                                 fprof["node_ms_per_run"], node_text(prof["top_nodes"][0])))
        if r["int8_over_fp32_latency_batch1"] > 1.0:
            p1, f1 = r["profile_int8_batch1"], r["profile_fp32_batch1"]
            out.append("Int8 is not faster at batch 1 in %s (%.3f vs %.3f ms). Batch-1 profile: int8 node time %.3f ms "
                       "per run (%s) vs FP32 %.3f ms (%s); the int8 top node is %s." % (
                           variant_label(r["variant"]), r["int8_ms_batch1"], r["fp32_ms_batch1"],
                           p1["node_ms_per_run"], share_line(p1), f1["node_ms_per_run"], share_line(f1),
                           node_text(p1["top_nodes"][0])))
    return " ".join(out)


INFERRED = """Inferred, not measured: that ONNX Runtime runs a QLinearConv whose weight zero points are not all 0 in a slower kernel. ORT's CPU QLinearConv source (onnxruntime/core/providers/cpu/quantization/qlinearconv.cc, read at a recent commit, not checked against the 1.30.0 binary) pre-packs weights for its symmetric kernels (MlasConvSym*, MlasSymmQgemm*) only when the weights are int8 and every weight zero point is 0; which kernel 1.30.0 ran for each node was not traced. Profiled times include the profiler's own overhead (compare a profile's wall time per run with the timing table)."""


def write_md(path, rows, args, load_start, load_end, seconds):
    lines = [
        "# ONNX export in ONNX Runtime: int8 against FP32",
        "",
        "Written by `bench/onnx/run_onnx_bench.py` (`bench/run_onnx_bench.sh`). Zoo models on Fashion-MNIST "
        "(1x28x28), each quantized twice: **default** (qopt's built-in quantsim config, AIMET's defaults, "
        "`unsigned_symmetric` on) and **signed weights** (`examples/quantsim/onnxruntime_signed_weights.json`: the "
        "same with `unsigned_symmetric` off, so every weight zero point is 0). One qopt job per model and variant: "
        "fold_batch_norm, export float.onnx, calibrate W8A8 per-channel (%d training images), evaluate, export "
        "model.onnx (QDQ) and model.pt (TorchScript, fake quant). Accuracy on the 10 000 test images. ONNX Runtime %s "
        "(Node binding, CPU execution provider), %d intra-op threads on %d cores; default graph optimizations unless "
        "marked. FP32 columns: the model's float.onnx, timed once per model in the same rounds as both variants." % (
            CALIBRATION_IMAGES, rows[0]["onnxruntime"], args.threads, os.cpu_count()),
        "",
        "| model | variant | job FP32 top-1 | job evaluate top-1 | sim top-1 (model.pt) | ORT int8 top-1 | ORT FP32 "
        "top-1 | max \\|ORT - sim\\| (output steps), optimizations on / off | FP32 ms, batch 1 | int8 ms, batch 1 | "
        "int8 / FP32 latency | FP32 images/s, batch 64 | int8 images/s, batch 64 | int8 / FP32 throughput |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append("| %s | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f / %.2f | %.3f | %.3f | %.2f | %.0f | %.0f | "
                     "%.2f |" % (
                         r["model"], variant_label(r["variant"]), 100 * r["job_fp32_top1"], 100 * r["job_evaluate_top1"],
                         100 * r["sim_top1"], 100 * r["ort_top1"], 100 * r["ort_fp32_top1"],
                         r["max_abs_diff_in_output_steps"], r["max_abs_diff_in_output_steps_optimizations_off"],
                         r["fp32_ms_batch1"], r["int8_ms_batch1"], r["int8_over_fp32_latency_batch1"],
                         r["fp32_images_per_s_batch64"], r["int8_images_per_s_batch64"],
                         r["int8_over_fp32_throughput_batch64"]))
    lines += [""] + ["- %s, %s: %.1f%% of output values differ from the simulation's by half an output step or more "
                     "(%.1f%% with optimizations off); ORT's int8 argmax agrees with the simulation's on %.2f%% of the "
                     "images." % (r["model"], variant_label(r["variant"]), 100 * r["outputs_off_by_half_step_or_more"],
                                  100 * r["outputs_off_by_half_step_or_more_optimizations_off"],
                                  100 * r["top1_agreement_ort_vs_sim"]) for r in rows]
    lines += ["", "With `quantization.kernels: onnxruntime_int8` (the simulation computing conv, add and pooling as "
              "ORT's int8 kernels do; same model.onnx), ORT's output with optimizations on against that simulation:", "",
              "| model | variant | simulation top-1 | ORT int8 top-1 | max \\|ORT - sim\\| (output steps) | "
              "output values that differ | model.onnx the same file |", "|---|---|---|---|---|---|---|"]
    lines += ["| %s | %s | %.2f | %.2f | %.2f | %.4f%% | %s |" % (
        r["model"], variant_label(r["variant"]), 100 * r["sim_int8_kernels_top1"], 100 * r["ort_top1"],
        r["max_abs_diff_in_output_steps_int8_kernels"], 100 * r["outputs_differing_int8_kernels"],
        "yes" if r["model_onnx_same_with_int8_kernels"] else "no") for r in rows]
    lines += ["", "Medians of %d timed runs at batch 1 and %d at batch 64 per model and graph, in %d interleaved rounds "
              "(FP32 and %d int8 graphs; the order rotates each round and flips every %d rounds; one session per "
              "round; the first %d runs of a session untimed at batch 1, %d at batch 64)." % (
                  rows[0]["timed_runs"]["batch1"], rows[0]["timed_runs"]["batch64"], args.rounds,
                  len(set(r["variant"] for r in rows)), len(set(r["variant"] for r in rows)) + 1, args.warmup + 1,
                  max(1, args.warmup // 5) + 1), ""]
    lines += ["## Weight zero points", "",
              "Output channels with a non-zero weight zero point in model.onnx, by layer kind.", "",
              "| model | variant | depthwise conv | other conv | gemm |", "|---|---|---|---|---|"]
    for r in rows:
        k = r["weight_zero_points"]["by_kind"]
        lines.append("| %s | %s | %s | %s | %s |" % (r["model"], variant_label(r["variant"]), zero_point_cell(k, "depthwise"),
                                                     zero_point_cell(k, "conv"), zero_point_cell(k, "gemm")))
    lines += ["", "## Where ORT's time goes", "",
              "One profiled session per graph at batch 64 (`run_onnx.js --profile`), %d runs after the first; node "
              "time per run and its share per op type (under 1%% summed as other), then the 3 slowest nodes; and one "
              "at batch 1 (%d runs after the first), op types only." % (args.profile_runs, 5 * args.profile_runs), ""]
    seen_fp32 = set()
    for r in rows:
        p = r["profile_int8_batch64"]
        lines += ["- %s, %s, int8: %.2f ms node time per run (wall %.2f ms): %s." % (
            r["model"], variant_label(r["variant"]), p["node_ms_per_run"], p["wall_ms_per_run"], share_line(p)),
                  "  - top nodes: %s." % "; ".join(node_text(n) for n in p["top_nodes"]),
                  "  - batch 1: %.3f ms node time per run (wall %.3f ms): %s." % (
                      r["profile_int8_batch1"]["node_ms_per_run"], r["profile_int8_batch1"]["wall_ms_per_run"],
                      share_line(r["profile_int8_batch1"]))]
        if r["model"] not in seen_fp32:
            seen_fp32.add(r["model"])
            f = r["profile_fp32_batch64"]
            lines += ["- %s, FP32: %.2f ms node time per run (wall %.2f ms): %s." % (
                r["model"], f["node_ms_per_run"], f["wall_ms_per_run"], share_line(f)),
                      "  - top nodes: %s." % "; ".join(node_text(n) for n in f["top_nodes"]),
                      "  - batch 1: %.3f ms node time per run (wall %.3f ms): %s." % (
                          r["profile_fp32_batch1"]["node_ms_per_run"], r["profile_fp32_batch1"]["wall_ms_per_run"],
                          share_line(r["profile_fp32_batch1"]))]
    lines += ["", "## Which kernels ORT ran", ""]
    for r in rows:
        int8_in = sum(1 for c in r["float_convs_left"] if "int8" in (c["input"], c["output"]))
        lines += ["- %s, %s, exported QDQ graph: %s." % (r["model"], variant_label(r["variant"]),
                                                        ops_line(r["exported_int8_ops"])),
                  "  - ORT's optimized QDQ graph: %s." % ops_line(r["optimized_int8_ops"]),
                  "  - %d convs fused into QLinearConv; %d left as float Conv between DequantizeLinear and "
                  "QuantizeLinear, %d of them with an int8 (not uint8) activation on their input or output." % (
                      r["optimized_int8_ops"].get("QLinearConv", 0), len(r["float_convs_left"]), int8_in)]
    for model in dict.fromkeys(r["model"] for r in rows):
        lines.append("- %s, ORT's optimized FP32 graph: %s." % (
            model, ops_line([r for r in rows if r["model"] == model][0]["optimized_fp32_ops"])))
    lines += ["", "## Why", "", "Written by the script from the figures above."]
    for model in dict.fromkeys(r["model"] for r in rows):
        lines += ["", explanation([r for r in rows if r["model"] == model])]
    lines += ["", INFERRED, "",
              "Load average (1 min) at start %.2f, at end %.2f; before each model's timing: %s. The whole bench took "
              "%.0f s." % (load_start, load_end, ", ".join(
                  "%s %.2f" % (m, [r for r in rows if r["model"] == m][0]["load_1min_before_timing"])
                  for m in dict.fromkeys(r["model"] for r in rows)), seconds),
              "", "Reproduce: `bench/run_onnx_bench.sh` (builds qopt only when build/ has no qopt-worker) or "
              "`/usr/bin/python3 bench/onnx/run_onnx_bench.py --worker build/worker/qopt-worker`."]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--worker", default=os.path.join(ROOT, "build", "worker", "qopt-worker"))
    p.add_argument("--models", default="resnet18,mobilenet_v2")
    p.add_argument("--variants", default="default,signed_weights", help="of: " + ", ".join(VARIANTS))
    # 6 rounds: each of the 3 rotations of (FP32, default, signed weights) once forward, once reversed.
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--batch1-runs", type=int, default=100, help="timed runs per round and session at batch 1")
    p.add_argument("--batch64-runs", type=int, default=12, help="timed runs per round and session at batch 64")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs per session at batch 1 (a fifth at batch 64)")
    p.add_argument("--profile-runs", type=int, default=10, help="profiled runs after the first, batch 64")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    args = p.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error("unknown variants %s (known: %s)" % (", ".join(unknown), ", ".join(VARIANTS)))
    torch.set_num_threads(args.threads)
    load_start, start = os.getloadavg()[0], time.perf_counter()
    x, labels = fashion_mnist.load("test")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [row for name in args.models.split(",") for row in bench_model(args, name, variants, x, labels, tmp)]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "onnx.json"), "w") as f:
        json.dump(rows, f, indent=1)
        f.write("\n")
    write_md(os.path.join(args.out, "onnx.md"), rows, args, load_start, os.getloadavg()[0], time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
