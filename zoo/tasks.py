"""Dense tasks derived from Fashion-MNIST, and the figures that score them.

Deterministic: no randomness anywhere, so train.py, its --verify, the benchmarks and the
C++ engine's tests all see the same data and compute the same figures.

Super-resolution (2x): the target `high` is the image scaled to [0, 1] (pixels / 255);
the input `low` is `high` shrunk to 14x14 by antialiased bicubic interpolation
(align_corners=False), clamped to [0, 1]. The baseline a model must beat is bicubic
upscaling of `low` back to 28x28 (align_corners=False, no antialias), clamped to [0, 1].

Segmentation: 11 classes per pixel. Class 0 is background; a pixel whose raw 8-bit value
is > 25 (FOREGROUND_THRESHOLD, about 10 % of full scale) is foreground and takes its
image's label + 1 (1..10).

Figures (the engine computes the same ones; errors are taken in float32 and accumulated
in float64):
- psnr_db: the prediction is clamped to [0, 1]; per image i, MSE_i is the mean squared
  error over all its pixels and PSNR_i = 10 * log10(1 / max(MSE_i, 1e-10)); the figure
  is the mean of PSNR_i over the images (not the PSNR of the mean MSE).
- miou: the predicted class of a pixel is the argmax over the class channel (ties go to
  the lower index, as torch.argmax); one 11x11 confusion matrix counts every pixel of
  the whole set; IoU_c = TP_c / (TP_c + FP_c + FN_c) for each class c with
  TP_c + FP_c + FN_c > 0, and mIoU is the mean of those IoUs.
- foreground_iou: the same IoU with classes 1..10 merged into one foreground class,
  scored against background 0 (a pixel is foreground when its class != 0).
- pixel_accuracy: the share of pixels whose predicted class equals the target.

As a CLI, writes the test split's derived data as .npy for a qopt recipe:

    /usr/bin/python3 zoo/tasks.py --out DIR [--split test|train] [--max N]

- sr_test_low.npy (float32 N,1,14,14) and sr_test_high.npy (float32 N,1,28,28): a
  super-resolution model's evaluation_data {"path": sr_test_low.npy,
  "labels_path": sr_test_high.npy}; no preprocess (the model takes [0, 1] pixels).
- seg_test_labels.npy (int64 N,28,28): a segmentation model's evaluation_data
  {"path": the split's IDX images (t10k-images-idx3-ubyte.gz for test) with
  "preprocess": {"mean": [0.286], "std": [0.353]}, "labels_path": seg_test_labels.npy};
  seg_test_images.npy (float32 N,1,28,28, already normalized) can stand for the IDX file,
  which --max makes necessary (the IDX file holds every image).
With --split train the files are named sr_train_*.npy and seg_train_*.npy.
"""
import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fashion_mnist  # noqa: E402

NUM_CLASSES = 11
FOREGROUND_THRESHOLD = 25


def _pixels(images):
    """Raw 8-bit pixel values (N, 28, 28), from uint8 or any dtype holding 0..255."""
    return images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images))


def sr_pair(images):
    """(low (N,1,14,14), high (N,1,28,28)) float32 in [0, 1] from raw pixels (N,28,28)."""
    high = _pixels(images).float().div(255.0).unsqueeze(1)
    low = F.interpolate(high, size=(14, 14), mode="bicubic", align_corners=False,
                        antialias=True).clamp(0, 1)
    return low, high


def bicubic_baseline(low):
    """Bicubic 2x upscaling of low (N,1,14,14) to (N,1,28,28), clamped to [0, 1]."""
    return F.interpolate(low, size=(28, 28), mode="bicubic", align_corners=False).clamp(0, 1)


def seg_target(images, labels):
    """Class map (N,28,28) int64: 0 where pixel <= 25, else the image's label + 1."""
    pixels = _pixels(images)
    labels = _pixels(labels).long()
    foreground = pixels > FOREGROUND_THRESHOLD
    return torch.where(foreground, (labels + 1).view(-1, 1, 1), torch.zeros((), dtype=torch.long))


def psnr_per_image(pred, target):
    """PSNR in dB of each image (float64, N), pred clamped to [0, 1]."""
    err = pred.float().clamp(0, 1) - target.float()
    mse = err.double().square().flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))


def psnr_db(pred, target):
    """Mean over images of the per-image PSNR (see the module's docstring)."""
    return psnr_per_image(pred, target).mean().item()


def predicted_classes(pred):
    """Classes (N,H,W) from logits (N,C,H,W) by argmax, ties to the lower index; or pred."""
    return pred.argmax(1) if pred.dim() == 4 else pred


def confusion_matrix(pred, target, num_classes=NUM_CLASSES):
    """Counts (num_classes, num_classes) int64: row = target class, column = predicted."""
    index = target.reshape(-1).long() * num_classes + predicted_classes(pred).reshape(-1).long()
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes)


def miou_from_confusion(cm):
    tp = cm.diag().double()
    union = cm.sum(0).double() + cm.sum(1).double() - tp
    present = union > 0
    return (tp[present] / union[present]).mean().item()


def foreground_iou_from_confusion(cm):
    tp = cm[1:, 1:].sum().double()
    union = cm.sum() - cm[0, 0]
    return (tp / union.double()).item() if union > 0 else float("nan")


def pixel_accuracy_from_confusion(cm):
    return (cm.diag().sum().double() / cm.sum().double()).item()


def miou(pred, target):
    """Mean IoU over the classes present in prediction or target (module docstring)."""
    return miou_from_confusion(confusion_matrix(pred, target))


def foreground_iou(pred, target):
    """IoU of foreground (class != 0) against background."""
    return foreground_iou_from_confusion(confusion_matrix(pred, target))


def pixel_accuracy(pred, target):
    return pixel_accuracy_from_confusion(confusion_matrix(pred, target))


def write_npy(out_dir, split="test", max_samples=0):
    """Writes the split's derived data (module docstring); returns the paths."""
    images, labels = fashion_mnist.images(split)
    if max_samples:
        images, labels = images[:max_samples], labels[:max_samples]
    low, high = sr_pair(images)
    arrays = {
        "sr_%s_low.npy" % split: low.numpy(),
        "sr_%s_high.npy" % split: high.numpy(),
        "seg_%s_labels.npy" % split: seg_target(images, labels).numpy(),
        "seg_%s_images.npy" % split: fashion_mnist.normalize(_pixels(images)).unsqueeze(1).numpy(),
    }
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, array in arrays.items():
        paths.append(os.path.join(out_dir, name))
        np.save(paths[-1], np.ascontiguousarray(array))
    return paths


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--split", choices=["test", "train"], default="test")
    p.add_argument("--max", type=int, default=0, help="first N images only (0 = all)")
    args = p.parse_args()
    for path in write_npy(args.out, args.split, args.max):
        print(path)


if __name__ == "__main__":
    main()
