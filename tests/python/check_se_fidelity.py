"""qopt's W8A8 output SQNR on MobileNetV3-style blocks (hard-swish, squeeze-excite with
hard-sigmoid and the scaling mul) is at least torch.ao FX's (fbgemm qconfig) on the same
weights and data (issue 10, point 5), and the SQNR computed here from qopt's exported
TorchScript agrees with the one in its report.json.

usage: check_se_fidelity.py QOPT_WORKER
Seeded random weights with batch-norm statistics from the data; 64 calibration and 64
other evaluation inputs. Exits non-zero with a message when a check fails.
"""
import copy
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
from torchvision.models.mobilenetv3 import InvertedResidual, InvertedResidualConfig

SIZE = 64


def se_net():
    """Stem, four inverted residuals with squeeze-excite (two with hard-swish, one with a
    residual add), pooling and a hard-swish head: mobilenet_v3_small's kinds of blocks."""
    cfgs = [InvertedResidualConfig(16, 3, 16, 16, True, "RE", 2, 1, 1.0),
            InvertedResidualConfig(16, 5, 72, 24, True, "HS", 2, 1, 1.0),
            InvertedResidualConfig(24, 5, 96, 24, True, "HS", 1, 1, 1.0),
            InvertedResidualConfig(24, 3, 88, 40, True, "RE", 2, 1, 1.0)]
    norm = nn.BatchNorm2d
    layers = [nn.Conv2d(3, 16, 3, 2, 1, bias=False), norm(16), nn.Hardswish()]
    layers += [InvertedResidual(c, norm) for c in cfgs]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(40, 64), nn.Hardswish(), nn.Linear(64, 10))


def batches(model, x, n=16):
    with torch.no_grad():
        return torch.cat([model(x[i:i + n]) for i in range(0, x.shape[0], n)])


def sqnr_db(y, yq):
    return float(10 * torch.log10(y.double().pow(2).sum() / (y - yq).double().pow(2).sum()))


def fail(msg):
    print("check_se_fidelity: " + msg, file=sys.stderr)
    sys.exit(1)


def main(worker):
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = se_net()
    g = torch.Generator().manual_seed(1)
    warm, calib, x_eval = (torch.randn(n, 3, SIZE, SIZE, generator=g) for n in (256, 64, 64))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # exact average over the batches below
    model.train()
    batches(model, warm)
    model.eval()

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    torch.backends.quantized.engine = "onednn"  # Debian's torch has no FBGEMM kernels
    prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("fbgemm"),
                          example_inputs=(calib[:1],))
    batches(prepared, calib)
    y = batches(model, x_eval)
    ao_db = sqnr_db(y, batches(convert_fx(prepared), x_eval))

    with tempfile.TemporaryDirectory() as tmp:
        traced = torch.jit.trace(model, calib[:1])
        traced.save(os.path.join(tmp, "model.pt"))
        np.save(os.path.join(tmp, "calib.npy"), calib.numpy())
        np.save(os.path.join(tmp, "eval.npy"), x_eval.numpy())
        recipe = {"name": "se", "model": {"path": "model.pt"},
                  "calibration_data": {"path": "calib.npy", "batch_size": 16},
                  "evaluation_data": {"path": "eval.npy", "batch_size": 16},
                  "quantization": {"param_bitwidth": 8, "activation_bitwidth": 8,
                                   "per_channel": True, "param_calibration": "min_max",
                                   "activation_calibration": "sqnr"},
                  "steps": [{"fold_batch_norm": {}}, {"calibrate": {}}, {"evaluate": {}},
                            {"export": {"torchscript": True}}]}
        with open(os.path.join(tmp, "recipe.json"), "w") as f:
            json.dump(recipe, f)
        out = os.path.join(tmp, "out")
        proc = subprocess.run([worker, "run", "--quiet", "--threads", "2", "--recipe",
                               os.path.join(tmp, "recipe.json"), "--out", out],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            fail("qopt-worker failed: " + proc.stderr.strip())
        report_db = json.load(open(os.path.join(out, "report.json")))["metrics"]["output_sqnr_db"]
        qopt_db = sqnr_db(y, batches(torch.jit.load(os.path.join(out, "model.pt")), x_eval))

    print("W8A8 output SQNR: qopt %.2f dB (report.json %.2f dB), torch.ao FX %.2f dB"
          % (qopt_db, report_db, ao_db))
    if abs(qopt_db - report_db) > 0.05:
        fail("exported model's SQNR %.3f dB differs from report.json's %.3f dB" % (qopt_db, report_db))
    if qopt_db < ao_db:
        fail("qopt %.2f dB is below torch.ao FX's %.2f dB" % (qopt_db, ao_db))


if __name__ == "__main__":
    main(sys.argv[1])
