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


def images(split, root=ROOT):
    """Raw images (N, 28, 28) uint8 and labels (N,) uint8, as numpy arrays."""
    prefix = "train" if split == "train" else "t10k"
    return (read_idx(os.path.join(root, prefix + "-images-idx3-ubyte.gz")),
            read_idx(os.path.join(root, prefix + "-labels-idx1-ubyte.gz")))


def normalize(pixels):
    """Float32 (pixels / 255 - MEAN) / STD of a tensor of raw 8-bit pixel values."""
    return (pixels.float().div(255.0) - MEAN) / STD


def load(split, root=ROOT):
    """Normalized images (N, 1, 28, 28) float32 and labels (N,) int64."""
    x, labels = images(split, root)
    return normalize(torch.from_numpy(x.copy())).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
