#!/usr/bin/python3
"""Writes the seed corpus of each harness into corpus/<harness>/ (small valid inputs).

Run with Debian's python3 (numpy, PIL and torch come from python3-torchvision's
dependencies). The output is committed; rerun only to change the seeds. Files named
regress-* are reproducers of bugs the fuzzers found, added by hand; this script leaves them.
"""
import gzip
import io
import json
import pathlib
import struct
import sys
import zipfile

import numpy as np
import torch
from PIL import Image

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def write(harness, name, data):
    path = HERE / "corpus" / harness / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def npy_bytes(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def idx_bytes(array, type_code):
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def recipes():
    for src in sorted((ROOT / "examples" / "recipes").iterdir()):
        harness = "recipe_yaml" if src.suffix == ".yaml" else "recipe_json"
        write(harness, src.name, src.read_bytes())
    write("recipe_yaml", "adaround.yaml",
          "model: {path: m.pt}\ncalibration_data: {path: d.npy, batch_size: 4}\n"
          "quantization: {param_bitwidth: 4, activation_bitwidth: 8}\n"
          "steps:\n  - cross_layer_equalization: {}\n  - adaround: {iterations: 10}\n"
          "  - calibrate: {}\n  - export: {prefix: out}\n")


def configs():
    write("quantsim_config", "aimet_style.json", json.dumps({
        "defaults": {"ops": {"is_output_quantized": "True", "is_symmetric": "False"},
                     "params": {"is_quantized": "True", "is_symmetric": "True"},
                     "strict_symmetric": "False", "unsigned_symmetric": "True",
                     "per_channel_quantization": "False"},
        "params": {"bias": {"is_quantized": "False"}},
        "op_type": {"Relu": {"is_output_quantized": "False"}, "Gemm": {"per_channel_quantization": "True"}},
        "supergroups": [{"op_list": ["Conv", "Relu"]}, {"op_list": ["Add", "Relu"]}],
        "model_input": {"is_input_quantized": "True"},
        "model_output": {"is_output_quantized": "True"},
        "layers": {"fc": {"bitwidth": 6, "params": {"weight": {"bitwidth": 4}}}},
    }, indent=1))


def encodings():
    enc = {"bitwidth": 8, "dtype": "int", "is_symmetric": "False", "max": 1.0, "min": -1.0,
           "offset": -128, "scale": 0.0078431377}
    sym = dict(enc, is_symmetric="True", offset=-127)
    write("encodings", "aimet_0.6.1.json", json.dumps({
        "version": "0.6.1",
        "activation_encodings": {"conv1": {"output": {"0": enc}}, "fc": {"input": {"0": [enc]}}},
        "param_encodings": {"conv1.weight": [sym, sym], "fc.weight": sym},
        "excluded_layers": [],
        "quantizer_args": {"activation_bitwidth": 8, "param_bitwidth": 8},
    }, indent=1))


def utf8():
    write("utf8", "ascii.txt", "layer1.0.conv1: weight has 3 dims, expected 4")
    # Valid 2-, 3- and 4-byte sequences, stray bytes, a surrogate and an overlong '/'.
    write("utf8", "mixed.txt", "café € 😀 ".encode() + b"\xff\xfe \xed\xa0\x80 \xc0\xaf")


def data():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 4, 4), dtype=np.uint8)
    labels = np.array([0, 1], dtype=np.uint8)
    write("npy", "u1.npy", npy_bytes(images))
    write("npy", "f4.npy", npy_bytes(rng.standard_normal((2, 1, 3, 3)).astype(np.float32)))
    write("npy", "i8.npy", npy_bytes(np.array([3, 1, 2], dtype=np.int64)))
    write("idx", "images.idx", idx_bytes(images, 0x08))
    write("idx", "labels.idx.gz", gzip.compress(idx_bytes(labels, 0x08), mtime=0))
    write("idx", "floats.idx", idx_bytes(rng.standard_normal((2, 3)).astype(np.float32), 0x0D))
    buf = io.BytesIO()
    np.savez(buf, inputs=images, labels=labels.astype(np.int64))
    write("npz", "inputs_labels.npz", buf.getvalue())
    buf = io.BytesIO()
    np.savez_compressed(buf, x=rng.standard_normal((2, 3)).astype(np.float32))
    write("npz", "compressed.npz", buf.getvalue())
    pixels = rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    for name, mode, fmt in [("rgb.png", "RGB", "PNG"), ("grey.png", "L", "PNG"), ("rgb.jpg", "RGB", "JPEG")]:
        buf = io.BytesIO()
        img = Image.fromarray(pixels)
        (img if mode == "RGB" else img.convert(mode)).save(buf, format=fmt)
        write("image", name, buf.getvalue())


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)
        self.bn = torch.nn.BatchNorm2d(2)
        self.fc = torch.nn.Linear(2, 2)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.mean(dim=(2, 3)))


def torchscript():
    torch.manual_seed(0)
    model = torch.jit.trace(Tiny().eval(), torch.zeros(1, 1, 5, 5))
    buf = io.BytesIO()
    torch.jit.save(model, buf)
    write("torchscript", "tiny.pt", buf.getvalue())
    # The harness's text form of the same archive (see torchscript_fuzz.cc); debug pickles
    # are left out, as they only map code back to Python source lines.
    records = []
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        for info in z.infolist():
            if not info.filename.endswith(".debug_pkl"):
                records.append(b"@@ " + info.filename.encode() + b"\n" + z.read(info))
    write("torchscript", "tiny.txt", b"\n".join(records))


def main():
    recipes()
    configs()
    encodings()
    utf8()
    data()
    torchscript()
    return 0


if __name__ == "__main__":
    sys.exit(main())
