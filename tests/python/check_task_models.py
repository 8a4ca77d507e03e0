"""The zoo's dense-output and transformer models through qopt: metrics and placement.

usage: check_task_models.py QOPT_WORKER

For super_resolution, segmentation and vit_tiny (zoo/*.pt) on the first 500 Fashion-MNIST
test images (zoo/tasks.py derives the targets), a W8A8 per-channel job with the recipe's
metric left to auto (fold_batch_norm, calibrate on 256 training images, evaluate, export):
- the metric qopt picks from the data is the card's (psnr_db / miou / top1);
- its FP32 figure equals zoo/tasks.py's on the zoo model, and its simulated figure equals
  zoo/tasks.py's on the outputs of the exported model.pt (stock PyTorch), as does the
  export check's exported_<metric> (the worker's own run of the written file);
- the W8A8 drop stays within the issue's bounds (0.2 dB PSNR, 0.5 pt mIoU; top-1 within
  1 pt on these 500 images, the full set is bench/accuracy's);
- quantizers sit where the README says: transposed-conv weights per channel along axis 1,
  layer-norm weights, softmax / matmul / GELU outputs; none on pixel shuffle or nearest
  upsampling; layers named after the user's modules;
- a metric that does not fit the data fails the job with a message naming the shapes.
Exits non-zero with a message on the first failure.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "zoo"))
import fashion_mnist  # noqa: E402
import tasks  # noqa: E402

EVAL, CALIB = 500, 256


def fail(msg):
    print("check_task_models: " + msg, file=sys.stderr)
    sys.exit(1)


def save(tmp, name, array):
    path = os.path.join(tmp, name + ".npy")
    np.save(path, np.ascontiguousarray(array))
    return path


def data(tmp):
    """Per task: (calibration path, evaluation DataRef, test inputs, targets)."""
    raw_train, _ = fashion_mnist.images("train")
    raw, labels = fashion_mnist.images("test")
    raw, labels = raw[:EVAL], labels[:EVAL]
    order = torch.randperm(raw_train.shape[0], generator=torch.Generator().manual_seed(1))[:CALIB].numpy()
    calib = raw_train[order]
    normalized = fashion_mnist.normalize(torch.from_numpy(raw.copy())).unsqueeze(1)
    low, high = tasks.sr_pair(raw)
    seg = tasks.seg_target(raw, labels)
    norm_calib = save(tmp, "calib", fashion_mnist.normalize(torch.from_numpy(calib)).unsqueeze(1).numpy())
    images = save(tmp, "images", normalized.numpy())
    return {
        "super_resolution": (save(tmp, "calib_low", tasks.sr_pair(calib)[0].numpy()),
                             {"path": save(tmp, "low", low.numpy()), "labels_path": save(tmp, "high", high.numpy())},
                             low, high),
        "segmentation": (norm_calib, {"path": images, "labels_path": save(tmp, "seg", seg.numpy())}, normalized, seg),
        "vit_tiny": (norm_calib, {"path": images, "labels_path": save(tmp, "labels", labels.astype(np.int64))},
                     normalized, torch.from_numpy(labels.astype(np.int64))),
    }


def figure(metric, outputs, target):
    if metric == "psnr_db":
        return tasks.psnr_db(outputs, target)
    if metric == "miou":
        return tasks.miou(outputs, target)
    return (outputs.argmax(1) == target).double().mean().item()


def run_job(worker, tmp, name, calib, evaluation, metric=""):
    recipe = {"name": name, "model": {"path": os.path.join(ROOT, "zoo", name + ".pt")},
              "calibration_data": {"path": calib, "batch_size": 64},
              "evaluation_data": dict(evaluation, batch_size=100), "num_threads": 2,
              "quantization": {"per_channel": True},
              "steps": [{"fold_batch_norm": {}}, {"calibrate": {}}, {"evaluate": {}}, {"export": {}}]}
    if metric:
        recipe["metric"] = metric
    path = os.path.join(tmp, name + ".recipe.json")
    with open(path, "w") as f:
        json.dump(recipe, f)
    out = os.path.join(tmp, name + ("_" + metric if metric else ""))
    proc = subprocess.run([worker, "run", "--quiet", "--recipe", path, "--out", out],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, out


def outputs_of(model_path, x):
    model = torch.jit.load(model_path)
    with torch.no_grad():
        return torch.cat([model(x[i:i + 100]) for i in range(0, x.shape[0], 100)])


def check_placement(name, report, encodings):
    quantizers = report["quantization"]["quantizers"]
    enabled = {(q.get("layer", ""), q["tensor"]): q for q in quantizers if q.get("enabled")}
    outputs = {layer for layer, tensor in enabled if tensor.startswith("output")}
    weights = {layer: q for (layer, tensor), q in enabled.items() if tensor == "weight"}

    def need(cond, what):
        if not cond:
            fail("%s: %s; quantized outputs %s, weights %s" % (name, what, sorted(outputs), sorted(weights)))

    if name == "super_resolution":
        need("shuffle" not in outputs, "pixel shuffle has an output quantizer")
        need(not any("upsample_nearest" in layer for layer in outputs), "nearest upsampling has an output quantizer")
        need("tail" in outputs and "tail" in weights, "the conv before the shuffle is not quantized")
    if name == "segmentation":
        q = weights.get("up2")
        need(q is not None and q.get("per_channel"), "the transposed conv up2 has no per-channel weight quantizer")
        entries = encodings["param_encodings"].get("up2.weight", [])
        need(len(entries) == 32, "up2.weight has %d encodings, want 32 (its output channels, axis 1)" % len(entries))
        need("up2" in outputs, "the transposed conv's output is not quantized")
    if name == "vit_tiny":
        for layer in ("blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.fc1", "blocks.0.fc2", "head"):
            need(layer in weights and layer in outputs, "linear layer %s is not quantized under its module name" % layer)
        need("blocks.0.norm1" in weights, "layer norm weights are not quantized")
        for op in ("blocks.0.attn.softmax", "blocks.0.attn.matmul", "blocks.0.act"):
            need(op in outputs, "%s has no output quantizer" % op)


def main(worker):
    bounds = {"psnr_db": 0.2, "miou": 0.005, "top1": 0.01}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (calib, evaluation, x, target) in data(tmp).items():
            card = json.load(open(os.path.join(ROOT, "zoo", name + ".json")))
            metric = card["metric"]
            proc, out = run_job(worker, tmp, name, calib, evaluation)
            if proc.returncode != 0:
                fail("%s: the job failed:\n%s" % (name, proc.stdout))
            report = json.load(open(os.path.join(out, "report.json")))
            metrics = report["metrics"]
            if metric not in metrics or "fp32_" + metric not in metrics:
                fail("%s: the report has no %s figures: %s" % (name, metric, sorted(metrics)))
            fp32 = figure(metric, outputs_of(os.path.join(ROOT, "zoo", name + ".pt"), x), target)
            sim = figure(metric, outputs_of(os.path.join(out, "model.pt"), x), target)
            tolerance = 1e-4 if metric == "psnr_db" else 1e-9
            if abs(metrics["fp32_" + metric] - fp32) > tolerance:
                fail("%s: qopt's FP32 %s %.6f, zoo/tasks.py's %.6f" % (name, metric, metrics["fp32_" + metric], fp32))
            if abs(metrics[metric] - sim) > tolerance:
                fail("%s: qopt's W8A8 %s %.6f, zoo/tasks.py's on the exported model %.6f" % (
                    name, metric, metrics[metric], sim))
            # The export step scores the written model.pt by the same metric.
            exported = metrics.get("exported_" + metric)
            if exported is None or abs(exported - sim) > tolerance:
                fail("%s: the export check reports exported_%s %s, zoo/tasks.py %.6f on model.pt" % (
                    name, metric, exported, sim))
            drop = fp32 - sim
            if drop > bounds[metric]:
                fail("%s: W8A8 drop %.4f %s, more than %.4f" % (name, drop, metric, bounds[metric]))
            encodings = json.load(open(os.path.join(out, "model.encodings")))
            check_placement(name, report, encodings)
            print("%s: %s FP32 %.4f, W8A8 %.4f (drop %.4f), equal to zoo/tasks.py's and to the export check's; "
                  "placement ok" % (
                name, metric, fp32, sim, drop))

        # A metric that does not fit the data is an error naming the shapes.
        calib, evaluation, _, _ = data(tmp)["segmentation"]
        proc, _ = run_job(worker, tmp, "segmentation", calib, evaluation, metric="psnr")
        want = "metric psnr needs float targets shaped like the outputs"
        if proc.returncode == 0 or want not in proc.stdout:
            fail("segmentation with metric psnr: want a failure saying %r, got rc %d:\n%s" % (
                want, proc.returncode, proc.stdout))
        print("segmentation with metric psnr fails: " + [l for l in proc.stdout.splitlines() if want in l][0].strip())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        fail("usage: check_task_models.py QOPT_WORKER")
    main(sys.argv[1])
