"""The PyTorch DDP peer of podtrain's reference job, for bench/bench_e2e.sh.

Same recipe as deploy/local/reference_job.yaml, written the way a PyTorch
user would: Fashion-MNIST from Debian's IDX files (pixels / 255), MLP
784-1024-1024-10 initialised like podtrain's (He-uniform body, head
uniform(+-1/sqrt(fan_in)), zero biases), global batch B = 256 split evenly
over the ranks, SGD with Nesterov momentum 0.9, learning rate 0.05 with
cosine decay per step (no warmup), mean cross-entropy over the global batch
(each rank's mean, averaged by DDP). The data order is a stream like
podtrain's: step t trains on positions [tB, (t+1)B), position p is example
perm_e[p mod N] of epoch e = p // N, so total steps = ceil(epochs N / B).

Run one process per rank (bench_e2e.sh does; /usr/bin/python3, Debian's
python3-torch 1.13 with gloo):

  ddp_mlp.py --rank R --world W --port P --epochs E --summary OUT.json

Steps are timed as podtrain's are (bench_e2e.sh): the wall time at which
each step finished, on rank 0; the steady-state rate is measured between
step --skip_steps and the second-to-last step, so start-up, the final step
and the evaluation after it are excluded.

Also imported by bench/recovery/torchrun_train.py (load_fashion_mnist,
build_model, learning_rate, batch_positions).
"""

import argparse
import ctypes
import datetime
import gzip
import json
import math
import os
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

DATA_DIR = "/usr/share/datasets/fashion-mnist"


def set_threads(threads):
    """One intra-op thread means one: torch's pool and OpenBLAS's own."""
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(threads)
    try:
        ctypes.CDLL("libopenblas.so.0").openblas_set_num_threads(threads)
    except (OSError, AttributeError):
        pass  # no OpenBLAS: OPENBLAS_NUM_THREADS is moot


def _idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_fashion_mnist(split, data_dir=DATA_DIR):
    """Images as uint8 [N, 784] (pixels(x[ids]) makes a batch of them float
    in [0, 1]: cheap, and keeps a restarted process's start-up short) and
    labels as int64 [N]."""
    prefix = "train" if split == "train" else "t10k"
    images = _idx(os.path.join(data_dir, prefix + "-images-idx3-ubyte.gz"))
    labels = _idx(os.path.join(data_dir, prefix + "-labels-idx1-ubyte.gz"))
    x = torch.from_numpy(images.reshape(len(images), -1).copy())
    return x, torch.from_numpy(labels.astype(np.int64))


def pixels(images):
    return images.float().div_(255.0)


def build_model(seed, hidden=(1024, 1024), inputs=784, classes=10):
    layers, width = [], inputs
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, classes))
    model = nn.Sequential(*layers)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        linears = [m for m in model if isinstance(m, nn.Linear)]
        for i, linear in enumerate(linears):
            fan_in = linear.weight.shape[1]
            head = i == len(linears) - 1
            bound = 1.0 / math.sqrt(fan_in) if head else math.sqrt(6.0 / fan_in)
            linear.weight.uniform_(-bound, bound, generator=generator)
            linear.bias.zero_()
    return model


def learning_rate(base, step, total_steps):
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


class Stream:
    """Positions of the job's stream -> example ids, one permutation/epoch."""

    def __init__(self, n, seed):
        self.n, self.seed, self.perms = n, seed, {}

    def perm(self, epoch):
        if epoch not in self.perms:
            g = torch.Generator().manual_seed(self.seed * 1000003 + epoch)
            self.perms = {k: v for k, v in self.perms.items() if k == epoch - 1}
            self.perms[epoch] = torch.randperm(self.n, generator=g)
        return self.perms[epoch]

    def ids(self, begin, end):
        positions = torch.arange(begin, end)
        epochs = positions // self.n
        out = torch.empty_like(positions)
        for e in epochs.unique().tolist():
            mask = epochs == e
            out[mask] = self.perm(e)[positions[mask] % self.n]
        return out


def batch_positions(step, global_batch, world, rank):
    """This rank's slice of step's global batch of stream positions."""
    per_rank = global_batch // world
    begin = step * global_batch + rank * per_rank
    return begin, begin + per_rank


def evaluate(model, x, y):
    model.eval()
    correct = 0
    with torch.no_grad():
        for begin in range(0, len(x), 1000):
            logits = model(pixels(x[begin:begin + 1000]))
            correct += int((logits.argmax(1) == y[begin:begin + 1000]).sum())
    model.train()
    return correct / len(x)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--world", type=int, default=1)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--global_batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip_steps", type=int, default=20)
    parser.add_argument("--summary", default="")
    args = parser.parse_args()
    set_threads(args.threads)
    assert args.global_batch % args.world == 0

    dist.init_process_group(
        "gloo", init_method="tcp://127.0.0.1:%d" % args.port,
        rank=args.rank, world_size=args.world,
        timeout=datetime.timedelta(seconds=60))
    x, y = load_fashion_mnist("train")
    n = len(x)
    total_steps = math.ceil(args.epochs * n / args.global_batch)
    model = DistributedDataParallel(build_model(args.seed))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9,
                                nesterov=True)
    stream = Stream(n, args.seed)
    dist.barrier()

    done_at = []  # wall time at which each step finished
    # Seconds per phase, summed over the window's steps (rank 0's profile).
    phases = {"data": 0.0, "forward": 0.0, "backward_allreduce": 0.0, "optimizer": 0.0}
    clock = time.perf_counter
    start = time.time()
    loss = torch.zeros(())
    for step in range(total_steps):
        t0 = clock()
        begin, end = batch_positions(step, args.global_batch, args.world, args.rank)
        ids = stream.ids(begin, end)
        images, labels = pixels(x[ids]), y[ids]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(args.lr, step, total_steps)
        optimizer.zero_grad(set_to_none=True)
        t1 = clock()
        loss = F.cross_entropy(model(images), labels)
        t2 = clock()
        loss.backward()  # DDP's bucketed all-reduce runs inside
        t3 = clock()
        optimizer.step()
        loss.item()
        t4 = clock()
        done_at.append(time.time())
        if args.skip_steps <= step < total_steps - 1:
            for key, seconds in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                phases[key] += seconds
    train_seconds = time.time() - start

    if args.rank == 0:
        test_x, test_y = load_fashion_mnist("test")
        accuracy = evaluate(model.module, test_x, test_y)
        first, last = min(args.skip_steps, total_steps - 2), total_steps - 2
        rate = (last - first) * args.global_batch / (done_at[last] - done_at[first])
        summary = {
            "peer": "pytorch-ddp", "torch": torch.__version__, "world": args.world,
            "epochs": args.epochs, "steps": total_steps,
            "window_steps": [first, last],
            "examples_per_second": rate, "test_accuracy": accuracy,
            "final_loss": float(loss), "train_seconds": train_seconds,
            "profile_ms_per_step": {k: 1000 * v / max(1, total_steps - 1 - args.skip_steps)
                                    for k, v in phases.items()},
        }
        print("DDP " + " ".join("%s=%s" % kv for kv in summary.items()), flush=True)
        if args.summary:
            with open(args.summary, "w") as f:
                json.dump(summary, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
