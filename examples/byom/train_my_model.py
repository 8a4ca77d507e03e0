"""A model of your own, as a qopt user would write it: trains MyNet on Fashion-MNIST and
saves it as traced TorchScript, the file qopt takes. See docs/byom.md.

    /usr/bin/python3 examples/byom/train_my_model.py --out out/my_model.pt

The defaults (3 epochs on the 60 000 training images, 2 threads, seed 0) take a few
minutes on 2 idle cores and reach 88.9 % test top-1 with Debian's torch 1.13. Training
is seeded, so a rerun with the same torch build gives the same model.
"""
import argparse
import gzip
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DATA = "/usr/share/datasets/fashion-mnist"
# Pixel statistics of the training images after scaling to [0, 1]; a qopt recipe's
# `preprocess: {mean: [0.2860], std: [0.3530]}` must say the same.
MEAN, STD = 0.2860, 0.3530


class SeparableResidual(nn.Module):
    """Depthwise 3x3 -> BN -> ReLU6 -> pointwise 1x1 -> BN, added to the input."""

    def __init__(self, channels):
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        y = F.relu6(self.bn1(self.depthwise(x)))
        return F.relu(x + self.bn2(self.pointwise(y)))


class MyNet(nn.Module):
    def __init__(self, width=32, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.block1 = SeparableResidual(width)
        self.down = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width), nn.ReLU())
        self.block2 = SeparableResidual(2 * width)
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.block2(self.down(self.block1(self.stem(x))))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def load(split):
    """Normalized images (N, 1, 28, 28) and labels (N,) from the gzipped IDX files."""
    prefix = "train" if split == "train" else "t10k"

    def idx(kind, header):
        with gzip.open(os.path.join(DATA, "%s-%s-ubyte.gz" % (prefix, kind))) as f:
            return np.frombuffer(f.read(), dtype=np.uint8, offset=header)

    images = torch.from_numpy(idx("images-idx3", 16).copy()).float().view(-1, 1, 28, 28)
    labels = torch.from_numpy(idx("labels-idx1", 8).astype(np.int64))
    return (images / 255.0 - MEAN) / STD, labels


def top1(model, x, y, batch=1000):
    model.eval()
    with torch.no_grad():
        correct = sum((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
                      for i in range(0, len(x), batch))
    return correct / len(x)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="my_model.pt", help="TorchScript file to write")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-samples", type=int, default=0, help="first N training images (0 = all 60 000)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate (one-cycle schedule)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    x_train, y_train = load("train")
    if args.train_samples:
        x_train, y_train = x_train[:args.train_samples], y_train[:args.train_samples]
    x_test, y_test = load("test")

    model = MyNet()
    steps = (len(x_train) + args.batch_size - 1) // args.batch_size
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=steps)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train))
        for step in range(steps):
            idx = order[step * args.batch_size:(step + 1) * args.batch_size]
            xb = x_train[idx]
            flip = torch.rand(len(idx)) < 0.5
            xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(-1), xb)
            loss = F.cross_entropy(model(xb), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        print("epoch %d/%d: loss %.3f, test top-1 %.4f (%.0f s)" % (
            epoch + 1, args.epochs, loss.item(), top1(model, x_test, y_test), time.time() - start), flush=True)

    # Trace in eval mode: batch norm then uses its running statistics, which qopt folds.
    model.eval()
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.zeros(1, 1, 28, 28))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    traced.save(args.out)
    print("saved %s: %d parameters, test top-1 %.4f" % (
        args.out, sum(t.numel() for t in model.parameters()), top1(torch.jit.load(args.out), x_test, y_test)))


if __name__ == "__main__":
    main()
