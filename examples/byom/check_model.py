"""Runs a model qopt exported (model.pt: TorchScript with fake-quant ops) in plain
PyTorch on the Fashion-MNIST test images and compares its top-1 with the job's report.

    /usr/bin/python3 examples/byom/check_model.py out/w8a8

Evaluates the first `metrics.eval_samples` test images (the recipes here evaluate in file
order, unshuffled), normalized as train_my_model.py and the recipes' `preprocess` do.
Exits 1 when the top-1 differs from the report's `metrics.top1` by more than
--tolerance: qopt's simulation and PyTorch compute the same fake-quantized arithmetic,
so only an image whose two best logits tie to within rounding can change its class.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_my_model import load, top1  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="a job's downloaded artifacts: model.pt and report.json")
    p.add_argument("--tolerance", type=float, default=0.002,
                   help="largest allowed |top-1 - report's top-1|, a fraction (default 0.002 = 0.2 points)")
    args = p.parse_args()

    torch.set_num_threads(2)
    metrics = json.load(open(os.path.join(args.folder, "report.json")))["metrics"]
    n = int(metrics["eval_samples"])
    x, y = load("test")
    model = torch.jit.load(os.path.join(args.folder, "model.pt"))
    ours = top1(model, x[:n], y[:n])
    print("%s: PyTorch top-1 %.4f, report top-1 %.4f (FP32 %.4f) on %d test images" % (
        args.folder, ours, metrics["top1"], metrics["fp32_top1"], n))
    if abs(ours - metrics["top1"]) > args.tolerance:
        sys.exit("top-1 differs from the report's by more than %g" % args.tolerance)


if __name__ == "__main__":
    main()
