"""Checks a compressed model exported by qopt with stock PyTorch (Debian's python3-torch),
counting its cost independently of qopt: parameters from the module's weights and biases,
MACs from the convolutions and matrix products the model really runs (seen through
PyTorch's dispatcher while it runs on one input).

usage: check_compression.py OUT_DIR ORIGINAL_MODEL
OUT_DIR holds model.pt and report.json from a recipe with compression steps. The original
model's cost must equal the report's cost of the imported model, and the exported model's
the last compression step's "after" figures (no step after it changes the structure). Exits non-zero with a message on any mismatch.
"""
import json
import os
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

COMPRESSION = ("spatial_svd", "weight_svd", "channel_pruning")


def fail(msg):
    print("check_compression: " + msg, file=sys.stderr)
    sys.exit(1)


class MacCounter(TorchDispatchMode):
    """Multiply-accumulates of convolutions (output elements x in/groups x kernel) and matrix
    products (output elements x reduced dimension)."""

    def __init__(self):
        super().__init__()
        self.macs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.__name__ if hasattr(func, "__name__") else str(func)
        base = name.split(".")[0]
        if base in ("convolution", "_convolution"):
            w = args[1]
            self.macs += out.numel() * w[0].numel()
        elif base == "addmm":
            self.macs += out.numel() * args[1].shape[-1]
        elif base in ("mm", "bmm", "matmul"):
            self.macs += out.numel() * args[0].shape[-1]
        return out


def cost(model, shape):
    params = sum(p.numel() for n, p in model.named_parameters() if n.endswith(".weight") or n.endswith(".bias"))
    counter = MacCounter()
    with torch.no_grad(), counter:
        y = model(torch.randn(*shape))
    if not torch.isfinite(y).all():
        fail("the model's output is not finite")
    return params, counter.macs


def main(out, original_path):
    report = json.load(open(os.path.join(out, "report.json")))
    steps = [s for s in report["steps"] if s["step"] in COMPRESSION]
    if not steps:
        fail("the report has no compression step")
    shape = [int(d) for d in report["cost"]["input_shape"]]
    first, last = report["cost"], steps[-1]["figures"]
    params, macs = cost(torch.jit.load(original_path), shape)
    if (params, macs) != (first["parameters"], first["macs"]):
        fail("original model: counted %d parameters, %d MACs; the report says %d, %d" %
             (params, macs, first["parameters"], first["macs"]))
    params, macs = cost(torch.jit.load(os.path.join(out, "model.pt")), shape)
    if (params, macs) != (last["params_after"], last["macs_after"]):
        fail("exported model: counted %d parameters, %d MACs; the report says %d, %d" %
             (params, macs, last["params_after"], last["macs_after"]))
    print("check_compression: %d -> %d parameters, %d -> %d MACs, as reported" %
          (first["parameters"], params, first["macs"], macs))


if __name__ == "__main__":
    main(*sys.argv[1:])
