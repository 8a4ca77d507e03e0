"""A job's ONNX artifacts as a client downloaded them are a model users can run.

    check_downloaded_onnx.py DIR WHO [--images 300]

DIR holds model.onnx, model.onnx.encodings and model.pt downloaded from one job (small_cnn
on Fashion-MNIST). Checks: onnx.checker passes; the encodings file names ONNX tensors of
the model; ONNX Runtime (tools/onnxruntime/run_onnx.js, node from $QOPT_NODE, default
`node`) on the first --images test images agrees on the top class with the TorchScript
simulation (model.pt) on at least 99% of them. WHO names the client in the ok / FAIL lines.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "zoo"))
import fashion_mnist  # noqa: E402

RUNNER = os.path.join(ROOT, "tools", "onnxruntime", "run_onnx.js")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("who")
    p.add_argument("--images", type=int, default=300)
    args = p.parse_args()
    torch.set_num_threads(2)
    failures = 0

    def check(ok, message):
        nonlocal failures
        print(("ok   " if ok else "FAIL ") + "%s: %s" % (args.who, message), flush=True)
        failures += 0 if ok else 1

    model_path = os.path.join(args.dir, "model.onnx")
    model = onnx.load(model_path)
    try:
        onnx.checker.check_model(model)
        check(True, "downloaded model.onnx passes onnx.checker (opset %d)" % model.opset_import[0].version)
    except onnx.checker.ValidationError as e:
        check(False, "downloaded model.onnx fails onnx.checker: %s" % str(e).splitlines()[0])

    encodings = json.load(open(os.path.join(args.dir, "model.onnx.encodings")))
    tensors = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.input}
    named = list(encodings["activation_encodings"]) + list(encodings["param_encodings"])
    unknown = [t for t in named if t not in tensors]
    check(named and not unknown, "model.onnx.encodings names %d ONNX tensors of the model%s" %
          (len(named), "" if not unknown else " (not in the model: %s)" % unknown[:3]))

    x, _ = fashion_mnist.load("test")
    x = x[:args.images].contiguous()
    with torch.no_grad():
        simulated = torch.jit.load(os.path.join(args.dir, "model.pt"))(x)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(os.path.join(tmp, "in.npy"), x.numpy())
        run = subprocess.run([os.environ.get("QOPT_NODE", "node"), RUNNER, model_path, tmp, os.path.join(tmp, "in.npy"),
                              "--threads", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if run.returncode != 0:
            check(False, "ONNX Runtime did not run model.onnx: %s" % run.stderr.strip()[-500:])
            return 1
        # run_onnx.js names each output's file after it, other characters as "_".
        output = re.sub(r"[^A-Za-z0-9_.-]", "_", model.graph.output[0].name)
        runtime = torch.from_numpy(np.load(os.path.join(tmp, output + ".npy")))
    agree = (runtime.argmax(1) == simulated.argmax(1)).float().mean().item()
    check(runtime.shape == simulated.shape and agree >= 0.99,
          "ONNX Runtime's top class agrees with model.pt's on %.1f%% of %d test images" % (100 * agree, x.shape[0]))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
