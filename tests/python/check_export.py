"""Checks an exported model with stock PyTorch (Debian's python3-torch).

usage: check_export.py DIR
DIR holds model.pt and model.encodings from qopt, and input.pt / expected.pt: an input
batch and qopt's simulated output for it. Exits non-zero with a message on any mismatch.
"""
import json
import os
import sys

import torch


def fail(msg):
    print("check_export: " + msg, file=sys.stderr)
    sys.exit(1)


def main(d):
    model = torch.jit.load(os.path.join(d, "model.pt"))
    x = torch.load(os.path.join(d, "input.pt"))
    expected = torch.load(os.path.join(d, "expected.pt"))
    with torch.no_grad():
        got = model(x)
    err = (got - expected).abs().max().item()
    scale = expected.abs().max().item()
    if err > 1e-5 * scale:
        fail("output differs from qopt's simulation: max abs diff %g (max |y| %g)" % (err, scale))

    graph = str(model.graph) + "".join(str(m.graph) for m in [model])
    if "fake_quantize_per" not in model.code and "fake_quantize_per" not in graph:
        fail("no fake_quantize ops in the exported model")

    enc = json.load(open(os.path.join(d, "model.encodings")))
    if enc.get("version") != "0.6.1":
        fail("encodings version is %r" % enc.get("version"))
    for key in ("activation_encodings", "param_encodings", "excluded_layers", "quantizer_args"):
        if key not in enc:
            fail("encodings lack " + key)
    state = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    for name, entries in enc["param_encodings"].items():
        if name not in state:
            fail("param_encodings key %s is not a parameter of the exported model" % name)
        w = state[name]
        if len(entries) not in (1, w.shape[0]):
            fail("%s: %d encodings for %d channels" % (name, len(entries), w.shape[0]))
        for e in entries:
            for field in ("bitwidth", "dtype", "is_symmetric", "min", "max", "scale", "offset"):
                if field not in e:
                    fail("%s lacks %s" % (name, field))
        if len(entries) > 1:
            scales = buffers[name + "_scale"]
            if not torch.equal(scales, torch.tensor([e["scale"] for e in entries], dtype=torch.float32)):
                fail("%s: per-channel scales differ from the encodings file" % name)
            # Re-quantize with the encodings file alone: the grid must match stock PyTorch's op.
            zp = torch.tensor([-e["offset"] for e in entries], dtype=torch.int32)
            qmax = 2 ** entries[0]["bitwidth"] - 1
            if entries[0]["is_symmetric"] == "True" and entries[0]["offset"] == -(2 ** (entries[0]["bitwidth"] - 1) - 1):
                qmax -= 1
            fq = torch.fake_quantize_per_channel_affine(w, scales, zp, 0, 0, qmax)
            steps = (fq / scales.reshape(-1, *[1] * (w.dim() - 1))) + zp.reshape(-1, *[1] * (w.dim() - 1))
            if (steps - steps.round()).abs().max().item() > 1e-3:
                fail("%s: weights do not land on the encoded grid" % name)
    print("check_export: ok (max abs diff %g)" % err)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        fail("usage: check_export.py DIR")
    main(sys.argv[1])
