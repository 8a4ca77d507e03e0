"""Trains the qopt model zoo on Fashion-MNIST, or verifies the committed models.

    /usr/bin/python3 zoo/train.py --model small_cnn      # train one model (or: all)
    /usr/bin/python3 zoo/train.py --verify               # check every committed card
    /usr/bin/python3 zoo/train.py --rebuild small_cnn    # retrain in a temp dir, compare

Training is seeded and single-process with a fixed thread count, so the same torch build
rebuilds a model bit for bit: the card's weights_sha256 (the file's sha256 also covers
TorchScript's debug records, which differ between runs). Each model is saved as traced
TorchScript (zoo/NAME.pt) with a card (zoo/NAME.json).
"""
import argparse
import hashlib
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fashion_mnist  # noqa: E402
from models import ARCHS  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
THREADS = 2

# Per model: epochs, peak learning rate, weight decay, seed, constructor arguments.
RECIPES = {
    "small_cnn": dict(epochs=3, lr=0.05, weight_decay=5e-4, seed=1, kwargs={}),
    "resnet18": dict(epochs=4, lr=0.1, weight_decay=5e-4, seed=2, kwargs={"width": 16}),
    "mobilenet_v2": dict(epochs=5, lr=0.1, weight_decay=4e-5, seed=3, kwargs={"width_mult": 0.5}),
}
BATCH = 128


def augment(x, g):
    """Random 2-pixel shifts (pad + crop) and horizontal flips."""
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


def evaluate(model, x, y, batch=1000):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    return correct / x.shape[0]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def sha256_weights(state):
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def train(name, out_dir):
    r = RECIPES[name]
    torch.manual_seed(r["seed"])
    torch.set_num_threads(THREADS)
    model = ARCHS[name](**r["kwargs"])
    x_train, y_train = fashion_mnist.load("train")
    x_test, y_test = fashion_mnist.load("test")
    g = torch.Generator().manual_seed(r["seed"])
    steps_per_epoch = (x_train.shape[0] + BATCH - 1) // BATCH
    opt = torch.optim.SGD(model.parameters(), lr=r["lr"], momentum=0.9, nesterov=True,
                          weight_decay=r["weight_decay"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r["lr"], epochs=r["epochs"],
                                                steps_per_epoch=steps_per_epoch)
    start = time.time()
    for epoch in range(r["epochs"]):
        model.train()
        order = torch.randperm(x_train.shape[0], generator=g)
        total = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * BATCH:(step + 1) * BATCH]
            xb = augment(x_train[idx], g)
            loss = F.cross_entropy(model(xb), y_train[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        acc = evaluate(model, x_test, y_test)
        print("%s epoch %d/%d loss %.4f test %.4f (%.0f s)" % (
            name, epoch + 1, r["epochs"], total / steps_per_epoch, acc, time.time() - start),
            flush=True)
    seconds = time.time() - start
    model.eval()
    path = os.path.join(out_dir, name + ".pt")
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.zeros(1, 1, 28, 28))
    traced.save(path)
    acc = evaluate(torch.jit.load(path), x_test, y_test)
    card = {
        "name": name,
        "arch": type(model).__name__,
        "kwargs": r["kwargs"],
        "input_shape": [1, 1, 28, 28],
        "normalization": {"scale": 1 / 255.0, "mean": fashion_mnist.MEAN, "std": fashion_mnist.STD},
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs": r["epochs"],
        "batch_size": BATCH,
        "peak_lr": r["lr"],
        "weight_decay": r["weight_decay"],
        "seed": r["seed"],
        "threads": THREADS,
        "torch": torch.__version__,
        "train_seconds": round(seconds, 1),
        "fp32_test_accuracy": acc,
        "sha256": sha256_file(path),
        "weights_sha256": sha256_weights(traced.state_dict()),
    }
    with open(os.path.join(out_dir, name + ".json"), "w") as f:
        json.dump(card, f, indent=2)
        f.write("\n")
    print(json.dumps(card, indent=2))
    return card


def verify(out_dir):
    """Every card's model exists, hashes match, and the FP32 test accuracy reproduces."""
    torch.set_num_threads(THREADS)
    x_test, y_test = fashion_mnist.load("test")
    ok = True
    for name in RECIPES:
        card_path = os.path.join(out_dir, name + ".json")
        if not os.path.exists(card_path):
            continue
        card = json.load(open(card_path))
        path = os.path.join(out_dir, name + ".pt")
        model = torch.jit.load(path)
        problems = []
        if sha256_file(path) != card["sha256"]:
            problems.append("file sha256 differs from the card")
        if sha256_weights(model.state_dict()) != card["weights_sha256"]:
            problems.append("weights differ from the card")
        acc = evaluate(model, x_test, y_test)
        # Another CPU may round a few logits differently: allow two test images.
        if abs(acc - card["fp32_test_accuracy"]) > 2e-4:
            problems.append("test accuracy %.4f, card says %.4f" % (acc, card["fp32_test_accuracy"]))
        print("%s: %s (test accuracy %.4f)" % (name, "; ".join(problems) or "ok", acc))
        ok = ok and not problems
    return ok


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=list(RECIPES) + ["all"])
    p.add_argument("--out", default=HERE)
    p.add_argument("--verify", action="store_true")
    p.add_argument("--rebuild", choices=list(RECIPES))
    args = p.parse_args()
    if args.verify:
        sys.exit(0 if verify(args.out) else 1)
    if args.rebuild:
        import tempfile
        committed = json.load(open(os.path.join(HERE, args.rebuild + ".json")))
        with tempfile.TemporaryDirectory() as tmp:
            card = train(args.rebuild, tmp)
        same = card["weights_sha256"] == committed["weights_sha256"]
        print("rebuild of %s: weights %s the committed model" % (
            args.rebuild, "are identical to" if same else "DIFFER from"))
        sys.exit(0 if same else 1)
    if not args.model:
        p.error("give --model NAME|all or --verify")
    for name in (RECIPES if args.model == "all" else [args.model]):
        train(name, args.out)


if __name__ == "__main__":
    main()
