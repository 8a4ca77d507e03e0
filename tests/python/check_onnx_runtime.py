"""ONNX Runtime as the project installs it (tools/onnxruntime, run by node): a QDQ model
written with python3-onnx (per-tensor uint8 activations, per-channel int8 weights with
`axis`, opset 13) passes onnx.checker, and the runtime's output equals the same
quantize-dequantize arithmetic done in PyTorch within one step of the output grid; the
same model without Q/DQ pairs equals PyTorch's float conv to float precision; bad input to
the runner is refused with a message.

    check_onnx_runtime.py RUNNER_JS      (node: $QOPT_NODE, default node on the PATH)
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

RUNNER = sys.argv[1]
NODE = os.environ.get("QOPT_NODE", "node")
FAILURES = []


def check(ok, message):
    print(("ok   " if ok else "FAIL ") + message, flush=True)
    if not ok:
        FAILURES.append(message)


def run(model_path, out_dir, inputs, extra=()):
    os.makedirs(out_dir, exist_ok=True)
    files = []
    for i, x in enumerate(inputs):
        files.append(os.path.join(out_dir, "in%d.npy" % i))
        np.save(files[-1], x)
    return subprocess.run([NODE, RUNNER, model_path, out_dir] + files + list(extra),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def model(qdq, x_scale, x_zp, w_q, w_scales, bias, y_scale, y_zp):
    nodes, inits = [], [numpy_helper.from_array(bias, "conv.bias")]
    x = "x"
    if qdq:
        inits += [numpy_helper.from_array(np.array(x_scale, np.float32), "x.scale"),
                  numpy_helper.from_array(np.array(x_zp, np.uint8), "x.zero_point"),
                  numpy_helper.from_array(w_q, "conv.weight_quantized"),
                  numpy_helper.from_array(w_scales, "conv.weight.scale"),
                  numpy_helper.from_array(np.zeros(len(w_scales), np.int8), "conv.weight.zero_point"),
                  numpy_helper.from_array(np.array(y_scale, np.float32), "y.scale"),
                  numpy_helper.from_array(np.array(y_zp, np.uint8), "y.zero_point")]
        nodes += [helper.make_node("QuantizeLinear", ["x", "x.scale", "x.zero_point"], ["x_q"], name="input_quantize"),
                  helper.make_node("DequantizeLinear", ["x_q", "x.scale", "x.zero_point"], ["x_dq"], name="input_dequantize"),
                  helper.make_node("DequantizeLinear", ["conv.weight_quantized", "conv.weight.scale",
                                                        "conv.weight.zero_point"], ["conv.weight"], name="conv.weight_dequantize",
                                   axis=0)]
        x = "x_dq"
    else:
        inits.append(numpy_helper.from_array(w_q.astype(np.float32) * w_scales[:, None, None, None], "conv.weight"))
    nodes += [helper.make_node("Conv", [x, "conv.weight", "conv.bias"], ["conv_out"], name="conv", pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["conv_out"], ["relu_out"], name="relu")]
    out = "relu_out"
    if qdq:
        nodes += [helper.make_node("QuantizeLinear", ["relu_out", "y.scale", "y.zero_point"], ["y_q"], name="relu_quantize"),
                  helper.make_node("DequantizeLinear", ["y_q", "y.scale", "y.zero_point"], ["y"], name="relu_dequantize")]
        out = "y"
    graph = helper.make_graph(nodes, "qdq_check", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [2, 4, 8, 8])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(m)
    return m


def main():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8) * 1.5
    w = torch.randn(4, 3, 3, 3) * 0.3
    bias = torch.randn(4) * 0.1
    # The grids: asymmetric uint8 for activations, symmetric int8 per output channel for
    # weights (AIMET's offset -128 on the unsigned grid is int8 zero point 0).
    x_scale, x_zp = float((x.max() - x.min()) / 255), int(torch.round(-x.min() / ((x.max() - x.min()) / 255)))
    w_scales = (w.abs().reshape(4, -1).max(1).values / 127).float()
    w_q = torch.clamp(torch.round(w / w_scales[:, None, None, None]), -127, 127).to(torch.int8)
    w_dq = w_q.float() * w_scales[:, None, None, None]
    x_dq = torch.fake_quantize_per_tensor_affine(x, x_scale, x_zp, 0, 255)
    y_float = torch.relu(torch.nn.functional.conv2d(x_dq, w_dq, bias, padding=1))
    y_scale = float(y_float.max() / 255)
    reference = torch.fake_quantize_per_tensor_affine(y_float, y_scale, 0, 0, 255)

    with tempfile.TemporaryDirectory() as tmp:
        args = (x_scale, x_zp, w_q.numpy(), w_scales.numpy(), bias.numpy(), y_scale, 0)
        qdq_path, float_path = os.path.join(tmp, "qdq.onnx"), os.path.join(tmp, "float.onnx")
        onnx.save(model(True, *args), qdq_path)
        onnx.save(model(False, *args), float_path)
        check(True, "onnx.checker passes both models")

        r = run(qdq_path, os.path.join(tmp, "qdq_out"), [x.numpy()])
        check(r.returncode == 0, "runner runs the QDQ model: " + (r.stderr.strip().splitlines() or [""])[-1])
        if r.returncode == 0:
            y = torch.from_numpy(np.load(os.path.join(tmp, "qdq_out", "y.npy")))
            steps = ((y - reference).abs() / y_scale).max().item()
            check(steps <= 1.0 + 1e-4, "QDQ output within one output step of PyTorch's fake quantization (max %.3f steps)" % steps)
            check((y - reference).abs().gt(1e-6).float().mean().item() < 0.05,
                  "QDQ output equals PyTorch's on almost every element")

        r = run(float_path, os.path.join(tmp, "float_out"), [x_dq.numpy()], ["--threads", "1", "--repeat", "3"])
        check(r.returncode == 0, "runner runs the float model with --repeat")
        if r.returncode == 0:
            y = torch.from_numpy(np.load(os.path.join(tmp, "float_out", "relu_out.npy")))
            diff = (y - y_float).abs().max().item()
            check(diff < 1e-4, "float output equals PyTorch's conv (max diff %.2e)" % diff)
            check(len(json.loads(r.stdout)["ms"]) == 3, "--repeat prints three timings")

        r = run(float_path, os.path.join(tmp, "bad_out"), [x.numpy(), x.numpy()])
        check(r.returncode == 1 and "has 1 inputs" in r.stderr, "a wrong input count is refused: " + r.stderr.strip())
        np.save(os.path.join(tmp, "text.npy"), np.array(["a"]))
        r = subprocess.run([NODE, RUNNER, float_path, tmp, os.path.join(tmp, "text.npy")], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
        check(r.returncode == 1 and "unsupported dtype" in r.stderr, "an input of strings is refused: " + r.stderr.strip())
    print("%d failures" % len(FAILURES))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
