#!/usr/bin/env python3
"""Quantize a trained model to W8A8 with qopt-server, as one step of an ML pipeline.

Registers the model and the data under names, submits a post-training quantization
recipe that refers to them by name (batch-norm folding, calibration, evaluation, export),
prints progress, downloads the artifacts and prints FP32 vs W8A8 accuracy.

    PYTHONPATH=build/python python3 examples/python/pipeline.py --server 127.0.0.1:50051 \\
        --model zoo/small_cnn.pt \\
        --data /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz \\
        --labels /usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz \\
        --eval-data /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz \\
        --eval-labels /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz --out out/w8a8

Exit codes: 0 the job succeeded, 1 a call failed, 3 the job failed, 4 it was cancelled.
"""
import argparse
import os
import re
import sys

from qopt_client import Client, QoptError, service_pb2, state_name

EXIT_OK, EXIT_ERROR, EXIT_JOB_FAILED, EXIT_JOB_CANCELLED = 0, 1, 3, 4


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", help="HOST:PORT (default $QOPT_SERVER)")
    p.add_argument("--token", help="bearer token (default $QOPT_TOKEN)")
    p.add_argument("--tls-ca", help="PEM certificate to trust (default $QOPT_TLS_CA)")
    p.add_argument("--model", required=True, help="TorchScript model (.pt)")
    p.add_argument("--data", required=True, help="calibration images (IDX, gzipped or not)")
    p.add_argument("--labels", help="labels of --data (IDX)")
    p.add_argument("--eval-data", help="held-out images for evaluation (default: --data)")
    p.add_argument("--eval-labels", help="labels of --eval-data")
    p.add_argument("--model-name", help="record name (default: from the file name)")
    p.add_argument("--dataset-name", help="record name of --data (default: from the file name)")
    p.add_argument("--eval-dataset-name", help="record name of --eval-data")
    p.add_argument("--calib-samples", type=int, default=512, help="calibration samples (0 = all)")
    p.add_argument("--eval-samples", type=int, default=0, help="evaluation samples (0 = all)")
    # Fashion-MNIST's pixel statistics after scaling to [0, 1].
    p.add_argument("--mean", type=float, default=0.2860)
    p.add_argument("--std", type=float, default=0.3530)
    p.add_argument("--out", required=True, help="folder for the artifacts")
    return p.parse_args()


def record_name(path):
    """A record name from a file name: `t10k-images-idx3-ubyte.gz` -> `t10k-images-idx3-ubyte`."""
    stem = os.path.basename(path)
    for ext in (".gz", ".pt", ".idx", ".npy", ".npz"):
        stem = stem[: -len(ext)] if stem.endswith(ext) else stem
    return re.sub(r"[^A-Za-z0-9._-]", "-", stem).lstrip("._-")[:128] or "unnamed"


def w8a8_recipe(model, calibration, evaluation, args):
    preprocess = {"mean": [args.mean], "std": [args.std]}
    return {
        "name": f"{model}-w8a8",
        "model": {"name": model},
        "calibration_data": {"name": calibration, "max_samples": args.calib_samples,
                             "shuffle": True, "seed": 1, "batch_size": 64,
                             "preprocess": preprocess},
        "evaluation_data": {"name": evaluation, "max_samples": args.eval_samples,
                            "batch_size": 500, "preprocess": preprocess},
        "quantization": {"param_bitwidth": 8, "activation_bitwidth": 8, "per_channel": True,
                         "param_calibration": "min_max", "activation_calibration": "sqnr"},
        "steps": [{"fold_batch_norm": {}}, {"calibrate": {}}, {"evaluate": {}}, {"export": {}}],
    }


class ProgressPrinter:
    """One line per event with a message, and one when the state or the stage changes."""

    def __init__(self):
        self.last = None

    def __call__(self, event):
        key = (event.state, event.stage)
        if not event.message and key == self.last:
            return
        self.last = key
        text = f"  {event.progress * 100:3.0f}% {state_name(event.state):9} {event.stage or '-'}"
        print(f"{text}  {event.message}" if event.message else text, flush=True)


def print_accuracy(metrics):
    if "top1" in metrics:
        print(f"FP32 top-1 {metrics['fp32_top1']:.4f}, W8A8 top-1 {metrics['top1']:.4f} "
              f"({(metrics['top1'] - metrics['fp32_top1']) * 100:+.2f} points), "
              f"top-5 {metrics['top5']:.4f}")
    print(f"output SQNR {metrics['output_sqnr_db']:.1f} dB, top-1 agreement "
          f"{metrics['top1_agreement']:.4f}, mean KL {metrics['mean_kl']:.2e} "
          f"on {metrics['eval_samples']:.0f} samples")


def run(qopt, args):
    model = args.model_name or record_name(args.model)
    calibration = args.dataset_name or record_name(args.data)
    # replace=True: a pipeline rerun with a retrained model updates the record; jobs
    # already queued keep the blobs they were submitted with.
    qopt.create_model(model, args.model, description="pipeline.py", replace=True)
    qopt.create_dataset(calibration, args.data, labels=args.labels, replace=True)
    evaluation = calibration
    if args.eval_data:
        evaluation = args.eval_dataset_name or record_name(args.eval_data)
        qopt.create_dataset(evaluation, args.eval_data, labels=args.eval_labels, replace=True)
    print(f"registered model {model}, data {calibration}"
          + (f", evaluation data {evaluation}" if evaluation != calibration else ""), flush=True)

    job = qopt.submit(w8a8_recipe(model, calibration, evaluation, args))
    print(f"submitted {job.id}", flush=True)
    try:
        job = qopt.wait(job.id, on_event=ProgressPrinter())
    except KeyboardInterrupt:
        # The pipeline is being stopped: do not leave the job holding a worker.
        qopt.cancel(job.id)
        print(f"cancelled {job.id}", file=sys.stderr)
        return EXIT_JOB_CANCELLED
    if job.state == service_pb2.FAILED:
        print(f"job {job.id} failed: {job.error}", file=sys.stderr)
        return EXIT_JOB_FAILED
    if job.state != service_pb2.SUCCEEDED:
        print(f"job {job.id} is {state_name(job.state)}", file=sys.stderr)
        return EXIT_JOB_CANCELLED

    os.makedirs(args.out, exist_ok=True)
    for artifact in job.artifacts:
        path = qopt.download(job.id, artifact.name, os.path.join(args.out, artifact.name))
        print(f"downloaded {path} ({artifact.size} bytes)")
    print_accuracy(qopt.report(job.id)["metrics"])
    return EXIT_OK


def main():
    args = parse_args()
    try:
        with Client(args.server, token=args.token, tls_ca=args.tls_ca) as qopt:
            return run(qopt, args)
    except QoptError as error:
        print(f"error: {error.code}: {error.message}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
