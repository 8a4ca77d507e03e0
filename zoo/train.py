"""Trains the qopt model zoo on Fashion-MNIST, or verifies the committed models.

    /usr/bin/python3 zoo/train.py --model small_cnn      # train one model (or: all)
    /usr/bin/python3 zoo/train.py --verify               # check every committed card
    /usr/bin/python3 zoo/train.py --rebuild small_cnn    # retrain in a temp dir, compare

Training is seeded and single-process with a fixed thread count, so the same torch build
rebuilds a model bit for bit: the card's weights_sha256 (the file's sha256 also covers
TorchScript's debug records, which differ between runs). Each model is saved as traced
TorchScript (zoo/NAME.pt) with a card (zoo/NAME.json): its task and metric, how it was
trained, its FP32 test figures and hashes.

Besides the classifiers the zoo holds a 2x super-resolution net and a segmentation U-Net
on data that tasks.py derives from Fashion-MNIST; objectives.py says per task how a model
is fed, trained and scored.
"""
import argparse
import hashlib
import json
import os
import sys
import time

# Idle OpenMP threads sleep instead of spinning: on a machine shared with a build, a
# spinning thread waits for a descheduled peer and steps take 3-5x longer. Scheduling
# only; the work each thread does, and so every bit of the result, stays the same.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from models import ARCHS, Products  # noqa: E402
from objectives import OBJECTIVES, size, subset  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
THREADS = 2

# Per model: epochs, peak learning rate, weight decay, seed, constructor arguments; the
# later models also their task (default classification), optimizer (default SGD with
# Nesterov momentum 0.9), the share of steps spent warming up (default 0.3), batch size
# (default BATCH) and whether batches are shifted and flipped (augment, default True).
RECIPES = {
    "small_cnn": dict(epochs=3, lr=0.05, weight_decay=5e-4, seed=1, kwargs={}),
    "resnet18": dict(epochs=4, lr=0.1, weight_decay=5e-4, seed=2, kwargs={"width": 16}),
    "mobilenet_v2": dict(epochs=5, lr=0.1, weight_decay=4e-5, seed=3, kwargs={"width_mult": 0.5}),
    "super_resolution": dict(task="super_resolution", epochs=7, lr=2e-3, weight_decay=0.0, seed=4,
                             optimizer="adam", warmup=0.1, kwargs={"channels": 32, "blocks": 4}),
    "segmentation": dict(task="segmentation", epochs=4, lr=3e-3, weight_decay=1e-4, seed=5,
                         optimizer="adamw", warmup=0.1, kwargs={"width": 16}),
    # Within a 15-minute budget the ViT learns faster on plain images in small batches:
    # in a pilot (2 epochs of 15 000 images), shifts and flips cost it 14 points of
    # top-1 and batches of 128 instead of 64 another 6.
    "vit_tiny": dict(epochs=5, lr=2e-3, weight_decay=0.05, seed=6, optimizer="adamw", warmup=0.1,
                     batch=64, augment=False,
                     kwargs={"dim": 64, "depth": 4, "heads": 4, "mlp_dim": 128, "patch": 4}),
}
BATCH = 128
# The first three cards keep their form, so a rebuild writes them as they are: no
# training settings beyond the above, and --verify scores them on the whole test set.
ORIGINAL_CARDS = ("small_cnn", "resnet18", "mobilenet_v2")
# Later models are checked on the first VERIFY_SAMPLES test images (their card's
# verify_figures) to keep --verify quick: vit_tiny's linear layers and matmuls run on
# Debian torch's reference BLAS, about 5 ms an image.
VERIFY_SAMPLES = 2000


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


def optimizer(r, model):
    kind = r.get("optimizer", "sgd")
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=r["lr"], momentum=0.9, nesterov=True,
                               weight_decay=r["weight_decay"])
    return {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind](
        model.parameters(), lr=r["lr"], weight_decay=r["weight_decay"])


def fit(name, objective, model, train_data, progress_data):
    """Trains in place; returns the seconds it took."""
    r = RECIPES[name]
    g = torch.Generator().manual_seed(r["seed"])
    n = size(train_data)
    batch = r.get("batch", BATCH)
    steps_per_epoch = (n + batch - 1) // batch
    opt = optimizer(r, model)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r["lr"], epochs=r["epochs"],
                                                steps_per_epoch=steps_per_epoch,
                                                pct_start=r.get("warmup", 0.3))
    start = time.time()
    with Products.convolutions():
        for epoch in range(r["epochs"]):
            model.train()
            order = torch.randperm(n, generator=g)
            total = 0.0
            for step in range(steps_per_epoch):
                idx = order[step * batch:(step + 1) * batch]
                xb, yb = objective.batch(train_data, idx, g, r.get("augment", True))
                loss = objective.loss(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item()
            figures = objective.figures(model, progress_data)
            print("%s epoch %d/%d loss %.4f %s (%.0f s)" % (
                name, epoch + 1, r["epochs"], total / steps_per_epoch,
                " ".join("%s %.4f" % kv for kv in figures.items()), time.time() - start), flush=True)
    return time.time() - start


def train(name, out_dir):
    r = RECIPES[name]
    objective = OBJECTIVES[r.get("task", "classification")]
    torch.manual_seed(r["seed"])
    torch.set_num_threads(THREADS)
    model = ARCHS[name](**r["kwargs"])
    train_data, test_data = objective.load("train"), objective.load("test")
    original = name in ORIGINAL_CARDS
    progress_data = test_data if original else subset(test_data, VERIFY_SAMPLES)
    seconds = fit(name, objective, model, train_data, progress_data)
    model.eval()
    path = os.path.join(out_dir, name + ".pt")
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.zeros(objective.input_shape))
    traced.save(path)
    loaded = torch.jit.load(path)
    card = {
        "name": name,
        "task": objective.task,
        "metric": objective.metric,
        "arch": type(model).__name__,
        "kwargs": r["kwargs"],
        "input_shape": objective.input_shape,
        "normalization": objective.normalization,
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs": r["epochs"],
        "batch_size": r.get("batch", BATCH),
        "peak_lr": r["lr"],
        "weight_decay": r["weight_decay"],
        "seed": r["seed"],
        "threads": THREADS,
        "torch": torch.__version__,
        "train_seconds": round(seconds, 1),
        **objective.figures(loaded, test_data),
        "sha256": sha256_file(path),
        "weights_sha256": sha256_weights(traced.state_dict()),
    }
    if not original:
        card.update({
            "optimizer": r.get("optimizer", "sgd"),
            "warmup_fraction": r.get("warmup", 0.3),
            "augment": "shifts of up to 2 pixels and horizontal flips" if r.get("augment", True) else "none",
            **objective.card(test_data),
            "verify_samples": VERIFY_SAMPLES,
            "verify_figures": objective.figures(loaded, subset(test_data, VERIFY_SAMPLES)),
        })
    with open(os.path.join(out_dir, name + ".json"), "w") as f:
        json.dump(card, f, indent=2)
        f.write("\n")
    print(json.dumps(card, indent=2))
    return card


def verify(out_dir):
    """Every card's model exists, hashes match, and its FP32 test figures reproduce."""
    torch.set_num_threads(THREADS)
    ok = True
    test_data = {}
    for name in RECIPES:
        card_path = os.path.join(out_dir, name + ".json")
        if not os.path.exists(card_path):
            continue
        card = json.load(open(card_path))
        objective = OBJECTIVES[card["task"]]
        if objective.task not in test_data:
            test_data[objective.task] = objective.load("test")
        data = test_data[objective.task]
        path = os.path.join(out_dir, name + ".pt")
        start = time.time()
        model = torch.jit.load(path)
        problems = []
        if sha256_file(path) != card["sha256"]:
            problems.append("file sha256 differs from the card")
        if sha256_weights(model.state_dict()) != card["weights_sha256"]:
            problems.append("weights differ from the card")
        expected = card.get("verify_figures")
        if expected is None:
            expected = {"fp32_test_accuracy": card["fp32_test_accuracy"]}
        else:
            data = subset(data, card["verify_samples"])
        n = size(data)
        figures = objective.figures(model, data)
        for key, value in expected.items():
            if abs(figures[key] - value) > objective.tolerance(n):
                problems.append("%s %.6f, card says %.6f" % (key, figures[key], value))
        print("%s: %s (%s on %d test images, %.1f s)" % (
            name, "; ".join(problems) or "ok",
            " ".join("%s %.4f" % (k, figures[k]) for k in expected), n, time.time() - start))
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
