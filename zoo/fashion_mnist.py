"""Fashion-MNIST from Debian's dataset-fashion-mnist (IDX files, gzipped)."""
import gzip
import os

import numpy as np
import torch

ROOT = "/usr/share/datasets/fashion-mnist"
# Per-pixel statistics of the training images, after scaling to [0, 1].
MEAN, STD = 0.2860, 0.3530


def read_idx(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(split, root=ROOT):
    """Normalized images (N, 1, 28, 28) float32 and labels (N,) int64."""
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(os.path.join(root, prefix + "-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(root, prefix + "-labels-idx1-ubyte.gz"))
    x = (torch.from_numpy(images.copy()).float().div_(255.0) - MEAN) / STD
    return x.unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
