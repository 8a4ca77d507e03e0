#!/usr/bin/python3
"""ONNX export in ONNX Runtime: int8 (QDQ) against FP32 speed, and how close ORT's int8
kernels come to qopt's simulation, on the zoo models and the Fashion-MNIST test set.

    bench/onnx/run_onnx_bench.py [--worker build/worker/qopt-worker] [--models resnet18,mobilenet_v2]
                                 [--rounds 10] [--batch1-runs 60] [--batch64-runs 8] [--threads nproc]

Per model, one qopt job: fold_batch_norm, export (float.onnx: FP32, BN folded), calibrate
(W8A8 per-channel, 256 training images), evaluate (the 10 000 test images), export
(model.onnx: QDQ, model.pt: TorchScript with fake quant, encodings). Then on the 10 000
test images:
  - sim_top1: the exported model.pt run by PyTorch (qopt's simulation); the job's own
    evaluate top-1 is quoted beside it;
  - ort_top1: model.onnx in ONNX Runtime with its default graph optimizations (Q/DQ
    fused into int8 kernels where ORT can);
  - max |ORT - simulation| in steps of the output encoding, with optimizations on and off
    (off: Q/DQ run as the float ops the standard defines);
  - op counts of the graphs ORT runs after optimization (run_onnx.js --save-optimized).
Timing: float.onnx and model.onnx in the same run, rounds interleaved (the order flips
each round) so machine noise hits both alike; each round is one ORT session per model
and batch size; the first run of a session and the next --warmup runs are not timed.
Latency is the median at batch 1; throughput is 64 / median time at batch 64.
Writes bench/results/onnx.json (one object per model) and onnx.md. node is $QOPT_NODE
(default: node on the PATH).
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

FMNIST = fashion_mnist.ROOT
PREPROCESS = {"mean": [fashion_mnist.MEAN], "std": [fashion_mnist.STD]}
RUNNER = os.path.join(ROOT, "tools", "onnxruntime", "run_onnx.js")
ORT_BATCH = 1000
CALIBRATION_IMAGES = 256
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


def run_job(worker, name, out, tmp, threads):
    data = lambda images, **extra: dict({"path": FMNIST + "/" + images, "preprocess": PREPROCESS}, **extra)
    recipe = {
        "name": "onnx_bench_" + name, "model": {"path": os.path.join(ROOT, "zoo", name + ".pt")},
        "calibration_data": data("train-images-idx3-ubyte.gz", max_samples=CALIBRATION_IMAGES, batch_size=64),
        "evaluation_data": data("t10k-images-idx3-ubyte.gz", labels_path=FMNIST + "/t10k-labels-idx1-ubyte.gz",
                                batch_size=500),
        "quantization": {"per_channel": True}, "num_threads": threads,
        "steps": [{"fold_batch_norm": {}}, {"export": {"onnx": True, "prefix": "float"}}, {"calibrate": {}},
                  {"evaluate": {}}, {"export": {"onnx": True, "torchscript": True, "encodings": True}}],
    }
    path = os.path.join(tmp, name + ".json")
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


def accuracy(args, name, out, x, labels, tmp):
    with torch.no_grad():
        sim = torch.cat([torch.jit.load(os.path.join(out, "model.pt"))(x[i:i + 500]) for i in range(0, len(x), 500)])
    optimized = os.path.join(tmp, name + "_model.optimized.onnx")
    float_optimized = os.path.join(tmp, name + "_float.optimized.onnx")
    ort = ort_outputs(os.path.join(out, "model.onnx"), x, tmp, name + "_int8", args.threads, save_optimized=optimized)
    ort_off = ort_outputs(os.path.join(out, "model.onnx"), x, tmp, name + "_int8_off", args.threads, optimize=False)
    fp32 = ort_outputs(os.path.join(out, "float.onnx"), x, tmp, name + "_fp32", args.threads,
                       save_optimized=float_optimized)
    step = output_step(out)
    top1 = lambda y: round((y.argmax(1) == labels).float().mean().item(), 4)
    return {
        "sim_top1": top1(sim), "ort_top1": top1(ort), "ort_top1_optimizations_off": top1(ort_off),
        "ort_fp32_top1": top1(fp32),
        "max_abs_diff_in_output_steps": round(((ort - sim).abs() / step).max().item(), 3),
        "max_abs_diff_in_output_steps_optimizations_off": round(((ort_off - sim).abs() / step).max().item(), 3),
        "outputs_off_by_half_step_or_more": round((ort - sim).abs().ge(step / 2).float().mean().item(), 4),
        "outputs_off_by_half_step_or_more_optimizations_off": round(
            (ort_off - sim).abs().ge(step / 2).float().mean().item(), 4),
        "top1_agreement_ort_vs_sim": round((ort.argmax(1) == sim.argmax(1)).float().mean().item(), 4),
        "output_step": step,
        "optimized_int8_ops": op_counts(optimized), "optimized_fp32_ops": op_counts(float_optimized),
        "exported_int8_ops": op_counts(os.path.join(out, "model.onnx")),
        "float_convs_left": float_conv_activations(optimized),
    }


def timed(model, inputs, threads, runs, warmup):
    stdout, _ = run_ort(model, [inputs], tempfile.mkdtemp(dir=os.path.dirname(inputs)), threads,
                        ["--repeat", str(runs + warmup)])
    return json.loads(stdout)["ms"][warmup:]


def timing(args, out, x, tmp):
    """Interleaved rounds of FP32 and int8 sessions; milliseconds per run."""
    inputs = {}
    for batch in (1, 64):
        inputs[batch] = os.path.join(tmp, "batch%d.npy" % batch)
        np.save(inputs[batch], x[:batch].numpy())
    models = {"fp32": os.path.join(out, "float.onnx"), "int8": os.path.join(out, "model.onnx")}
    ms = collections.defaultdict(list)
    for r in range(args.rounds):
        for kind in (("fp32", "int8") if r % 2 == 0 else ("int8", "fp32")):
            ms[kind, 1] += timed(models[kind], inputs[1], args.threads, args.batch1_runs, args.warmup)
            ms[kind, 64] += timed(models[kind], inputs[64], args.threads, args.batch64_runs, max(1, args.warmup // 5))
    med = {k: statistics.median(v) for k, v in ms.items()}
    return {
        "fp32_ms_batch1": round(med["fp32", 1], 3), "int8_ms_batch1": round(med["int8", 1], 3),
        "int8_over_fp32_latency_batch1": round(med["int8", 1] / med["fp32", 1], 3),
        "fp32_images_per_s_batch64": round(64e3 / med["fp32", 64], 1),
        "int8_images_per_s_batch64": round(64e3 / med["int8", 64], 1),
        "int8_over_fp32_throughput_batch64": round(med["fp32", 64] / med["int8", 64], 3),
        "fp32_ms_batch64": round(med["fp32", 64], 2), "int8_ms_batch64": round(med["int8", 64], 2),
        "timed_runs": {"batch1": len(ms["fp32", 1]), "batch64": len(ms["fp32", 64])},
    }


def ort_version():
    with open(os.path.join(ROOT, "tools", "onnxruntime", "node_modules", "onnxruntime-node", "package.json")) as f:
        return json.load(f)["version"]


def bench_model(args, name, x, labels, tmp):
    out = os.path.join(tmp, name)
    evaluated, job_seconds = run_job(args.worker, name, out, tmp, args.threads)
    row = {"model": name, "job_evaluate_top1": evaluated["top1"], "job_fp32_top1": evaluated["fp32_top1"]}
    row.update(accuracy(args, name, out, x, labels, tmp))
    load_before = os.getloadavg()[0]
    row.update(timing(args, out, x, tmp))
    row.update({"load_1min_before_timing": round(load_before, 2), "load_1min_after_timing": round(os.getloadavg()[0], 2),
                "job_seconds": round(job_seconds, 1), "threads": args.threads, "cores": os.cpu_count(),
                "onnxruntime": ort_version(), "test_images": len(x), "calibration_images": CALIBRATION_IMAGES})
    print(json.dumps({k: v for k, v in row.items() if not k.endswith("_ops") and k != "float_convs_left"}), flush=True)
    return row


def ops_line(ops):
    return ", ".join("%s %d" % kv for kv in sorted(ops.items(), key=lambda kv: -kv[1]))


def write_md(path, rows, args, load_start, load_end, seconds):
    lines = [
        "# ONNX export in ONNX Runtime: int8 against FP32",
        "",
        "Written by `bench/onnx/run_onnx_bench.py` (`bench/run_onnx_bench.sh`). Zoo models on Fashion-MNIST "
        "(1x28x28), one qopt job each: fold_batch_norm, export float.onnx, calibrate W8A8 per-channel (%d training "
        "images), evaluate, export model.onnx (QDQ) and model.pt (TorchScript, fake quant). Accuracy on the 10 000 "
        "test images. ONNX Runtime %s (Node binding, CPU execution provider), %d intra-op threads on %d cores; "
        "default graph optimizations unless marked." % (CALIBRATION_IMAGES, rows[0]["onnxruntime"], args.threads,
                                                         os.cpu_count()),
        "",
        "| model | sim top-1 (model.pt) | job's evaluate top-1 | ORT int8 top-1 | ORT FP32 top-1 | max \\|ORT - sim\\| "
        "(output steps), optimizations on / off | FP32 ms, batch 1 | int8 ms, batch 1 | int8 / FP32 latency | FP32 "
        "images/s, batch 64 | int8 images/s, batch 64 | int8 / FP32 throughput |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append("| %s | %.2f | %.2f | %.2f | %.2f | %.2f / %.2f | %.3f | %.3f | %.2f | %.0f | %.0f | %.2f |" % (
            r["model"], 100 * r["sim_top1"], 100 * r["job_evaluate_top1"], 100 * r["ort_top1"], 100 * r["ort_fp32_top1"],
            r["max_abs_diff_in_output_steps"], r["max_abs_diff_in_output_steps_optimizations_off"],
            r["fp32_ms_batch1"], r["int8_ms_batch1"], r["int8_over_fp32_latency_batch1"],
            r["fp32_images_per_s_batch64"], r["int8_images_per_s_batch64"], r["int8_over_fp32_throughput_batch64"]))
    lines += [""] + ["- %s: %.1f%% of output values differ from the simulation's by one output step or more (%.1f%% with "
                     "optimizations off); ORT's int8 argmax agrees with the simulation's on %.2f%% of the images." % (
                         r["model"], 100 * r["outputs_off_by_half_step_or_more"],
                         100 * r["outputs_off_by_half_step_or_more_optimizations_off"],
                         100 * r["top1_agreement_ort_vs_sim"]) for r in rows]
    lines += ["", "Medians of %d timed runs at batch 1 and %d at batch 64 per model and precision, in %d interleaved "
              "rounds (order flipped each round; one session per round; the first %d runs of a session untimed at "
              "batch 1, %d at batch 64)." % (rows[0]["timed_runs"]["batch1"], rows[0]["timed_runs"]["batch64"],
                                            args.rounds, args.warmup + 1, max(1, args.warmup // 5) + 1), ""]
    lines += ["## Which kernels ORT ran", ""]
    for r in rows:
        int8_in = sum(1 for c in r["float_convs_left"] if "int8" in (c["input"], c["output"]))
        lines += ["- %s, exported QDQ graph: %s." % (r["model"], ops_line(r["exported_int8_ops"])),
                  "  - ORT's optimized QDQ graph: %s." % ops_line(r["optimized_int8_ops"]),
                  "  - ORT's optimized FP32 graph: %s." % ops_line(r["optimized_fp32_ops"]),
                  "  - %d convs fused into QLinearConv; %d left as float Conv between DequantizeLinear and "
                  "QuantizeLinear, %d of them with an int8 (not uint8) activation on their input or output." % (
                      r["optimized_int8_ops"].get("QLinearConv", 0), len(r["float_convs_left"]), int8_in)]
    lines += ["", EXPLANATION, "",
              "Load average (1 min) at start %.2f, at end %.2f; before each model's timing: %s. The whole bench took "
              "%.0f s." % (load_start, load_end, ", ".join("%s %.2f" % (r["model"], r["load_1min_before_timing"])
                                                          for r in rows), seconds),
              "", "Reproduce: `bench/run_onnx_bench.sh` (builds qopt only when build/ has no qopt-worker) or "
              "`/usr/bin/python3 bench/onnx/run_onnx_bench.py --worker build/worker/qopt-worker`."]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


EXPLANATION = """Why int8 is not faster here. ORT's QDQ fusion on this x86 build rewrites an int8 \
QuantizeLinear / DequantizeLinear pair to uint8 (zero point + 128) and fuses a conv into QLinearConv (uint8 \
activations, int8 weights) only when the activations on both sides are of that form. Where one activation feeds \
two consumers (ResNet18: a block's input feeds its first conv and the skip path or the downsample conv; \
MobileNetV2: a residual block's input feeds its expansion conv and the Add) ORT copies the shared \
DequantizeLinear, so one QuantizeLinear feeds two, and that pair keeps its int8 type; every conv touching it stays \
a float Conv between DequantizeLinear and QuantizeLinear, i.e. it pays the float conv plus the Q/DQ passes. The \
residual Adds also stay float between Q/DQ, and each QLinearConv island sits between NCHW/NHWC Transposes. The FP32 \
graph runs every conv in ORT's blocked NCHWc float kernels with none of this. At 28x28 with few channels the convs \
are small, so these per-op costs weigh as much as the arithmetic int8 would save. For MobileNetV2 the int8 \
depthwise 3x3 QLinearConvs are the bulk of the gap: an ORT profile taken while writing this bench (not part of its \
output) put most of the int8 run in six of its nine depthwise QLinearConvs, each far slower than the others of \
the same shape; why ORT's kernel does that is not known."""


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--worker", default=os.path.join(ROOT, "build", "worker", "qopt-worker"))
    p.add_argument("--models", default="resnet18,mobilenet_v2")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--batch1-runs", type=int, default=60, help="timed runs per round and session at batch 1")
    p.add_argument("--batch64-runs", type=int, default=8, help="timed runs per round and session at batch 64")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs per session at batch 1 (a fifth at batch 64)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load_start, start = os.getloadavg()[0], time.perf_counter()
    x, labels = fashion_mnist.load("test")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench_model(args, name, x, labels, tmp) for name in args.models.split(",")]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "onnx.json"), "w") as f:
        json.dump(rows, f, indent=1)
        f.write("\n")
    write_md(os.path.join(args.out, "onnx.md"), rows, args, load_start, os.getloadavg()[0], time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
