"""What each zoo task trains on and how it is scored: batches, loss and figures.

One class per task (classification, super_resolution, segmentation), used by train.py
for training, the card's figures and --verify. The derived targets and the metrics
themselves are tasks.py's.
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fashion_mnist  # noqa: E402
import tasks  # noqa: E402

NORMALIZED = {"scale": 1 / 255.0, "mean": fashion_mnist.MEAN, "std": fashion_mnist.STD}


def augment(x, g):
    """Random 2-pixel shifts (zero pad + crop) and horizontal flips of (N, C, 28, 28)."""
    n = x.shape[0]
    padded = F.pad(x, (2, 2, 2, 2))
    dx = torch.randint(0, 5, (n,), generator=g)
    dy = torch.randint(0, 5, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        crop = padded[i, :, dy[i]:dy[i] + 28, dx[i]:dx[i] + 28]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


def _batches(n, batch):
    return [slice(i, min(i + batch, n)) for i in range(0, n, batch)]


class Classification:
    """Ten classes; normalized images; top-1 = argmax == label on the test set."""
    task, metric = "classification", "top1"
    input_shape = [1, 1, 28, 28]
    normalization = NORMALIZED

    def load(self, split):
        return fashion_mnist.load(split)

    def batch(self, data, idx, g, shift_flip=True):
        # Shifted images are padded with 0 after normalization (mean grey), as the
        # first zoo models were trained; kept so they rebuild bit for bit.
        x, y = data
        return (augment(x[idx], g) if shift_flip else x[idx]), y[idx]

    def loss(self, output, target):
        return F.cross_entropy(output, target, label_smoothing=0.05)

    def figures(self, model, data, batch=1000):
        x, y = data
        model.eval()
        correct = 0
        with torch.no_grad():
            for s in _batches(x.shape[0], batch):
                correct += (model(x[s]).argmax(1) == y[s]).sum().item()
        return {"fp32_test_accuracy": correct / x.shape[0]}

    def tolerance(self, n):
        return 2.0 / n  # another CPU may round a few logits differently: two images

    def card(self, test_data):
        return {}


class SuperResolution:
    """2x: tasks.sr_pair's 14x14 low image in, its 28x28 high image out; L1 loss."""
    task, metric = "super_resolution", "psnr_db"
    input_shape = [1, 1, 14, 14]
    # The input is already in [0, 1]: pixels / 255, shrunk; no mean or std.
    normalization = {"scale": 1 / 255.0, "mean": 0.0, "std": 1.0}

    def load(self, split):
        images, _ = fashion_mnist.images(split)
        return torch.from_numpy(images.copy())

    def batch(self, images, idx, g, shift_flip=True):
        # Shift and flip the full-size image, then derive the pair from it.
        pixels = images[idx].float().unsqueeze(1)
        return tasks.sr_pair((augment(pixels, g) if shift_flip else pixels).squeeze(1))

    def loss(self, output, target):
        return F.l1_loss(output, target)

    def figures(self, model, images, batch=1000):
        model.eval()
        total = 0.0
        with torch.no_grad():
            for s in _batches(images.shape[0], batch):
                low, high = tasks.sr_pair(images[s])
                total += tasks.psnr_per_image(model(low), high).sum().item()
        return {"fp32_psnr_db": total / images.shape[0]}

    def tolerance(self, n):
        return 1e-3

    def card(self, images):
        low, high = tasks.sr_pair(images)
        return {
            "bicubic_psnr_db": tasks.psnr_db(tasks.bicubic_baseline(low), high),
            "input": "tasks.sr_pair's low image: pixels / 255 shrunk to 14x14 by antialiased "
                     "bicubic interpolation, clamped to [0, 1]",
            "target": "tasks.sr_pair's high image: pixels / 255, 28x28",
            "output_shape": [1, 1, 28, 28],
        }


class Segmentation:
    """11 classes per pixel (tasks.seg_target); normalized images; per-pixel cross-entropy."""
    task, metric = "segmentation", "miou"
    input_shape = [1, 1, 28, 28]
    normalization = NORMALIZED

    def load(self, split):
        images, labels = fashion_mnist.images(split)
        return torch.from_numpy(images.copy()), torch.from_numpy(labels.copy()).long()

    def batch(self, data, idx, g, shift_flip=True):
        # Shift and flip the raw pixels, so the padding is background in image and target.
        images, labels = data
        pixels = images[idx].float().unsqueeze(1)
        pixels = augment(pixels, g) if shift_flip else pixels
        return fashion_mnist.normalize(pixels), tasks.seg_target(pixels.squeeze(1), labels[idx])

    def loss(self, output, target):
        return F.cross_entropy(output, target)

    def figures(self, model, data, batch=1000):
        images, labels = data
        model.eval()
        cm = torch.zeros(tasks.NUM_CLASSES, tasks.NUM_CLASSES, dtype=torch.long)
        with torch.no_grad():
            for s in _batches(images.shape[0], batch):
                logits = model(fashion_mnist.normalize(images[s]).unsqueeze(1))
                cm += tasks.confusion_matrix(logits, tasks.seg_target(images[s], labels[s]))
        return {
            "fp32_miou": tasks.miou_from_confusion(cm),
            "fp32_foreground_iou": tasks.foreground_iou_from_confusion(cm),
            "fp32_pixel_accuracy": tasks.pixel_accuracy_from_confusion(cm),
        }

    def tolerance(self, n):
        return 1e-4

    def card(self, data):
        return {
            "num_classes": tasks.NUM_CLASSES,
            "foreground_threshold": tasks.FOREGROUND_THRESHOLD,
            "target": "tasks.seg_target: class 0 (background) where the raw 8-bit pixel "
                      "<= 25, else the image's label + 1 (1..10)",
            "output_shape": [1, tasks.NUM_CLASSES, 28, 28],
        }


OBJECTIVES = {o.task: o for o in (Classification(), SuperResolution(), Segmentation())}


def subset(data, n):
    """The first n samples of a task's data (a tensor or a tuple of tensors)."""
    return tuple(t[:n] for t in data) if isinstance(data, tuple) else data[:n]


def size(data):
    """How many samples a task's data holds."""
    return (data[0] if isinstance(data, tuple) else data).shape[0]
