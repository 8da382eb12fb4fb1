"""The torchrun peer of bench_recovery.sh: DDP training that checkpoints.

The same model, data and optimizer as bench/e2e/ddp_mlp.py, written the way
torchrun's docs ask for fault tolerance (elastic/train_script.html): on every
start, load the newest checkpoint if there is one; rank 0 saves model,
optimizer and step every --interval steps (torch.save to a temporary file,
fsync, rename). torchrun sets RANK, WORLD_SIZE, MASTER_ADDR/PORT and
TORCHELASTIC_RESTART_COUNT.

For the measurement (bench/recovery/measure.py), every rank appends
"<step> <unix time> <restart count>" to <log_dir>/steps-rank<R>.log when a
step finishes, and writes its pid to <log_dir>/pid-rank<R>-restart<C>, and
"<restart count> <mark> <unix time>" to <log_dir>/timeline-rank<R>.log at
its start-up milestones (process started, torch imported, process group
formed, data loaded, checkpoint loaded). After a restart it trains
--steps_after_restart more steps and exits 0, which ends torchrun.
"""

import time

STARTED = time.time()  # before the imports: their cost is part of a restart

import argparse
import datetime
import glob
import math
import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import ddp_mlp  # noqa: E402  (bench/e2e/ddp_mlp.py)


def newest_checkpoint(directory):
    paths = sorted(glob.glob(os.path.join(directory, "step-*.pt")))
    return paths[-1] if paths else None


def save(directory, step, model, optimizer):
    path = os.path.join(directory, "step-%08d.pt" % step)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save({"step": step, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict()}, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint_dir", required=True)
    parser.add_argument("--log_dir", required=True)
    parser.add_argument("--interval", type=int, default=50)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--steps_after_restart", type=int, default=5)
    parser.add_argument("--global_batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    ddp_mlp.set_threads(args.threads)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    os.makedirs(args.log_dir, exist_ok=True)
    with open(os.path.join(args.log_dir, "pid-rank%d-restart%d" % (rank, restart)), "w") as f:
        f.write("%d\n" % os.getpid())
    timeline = open(os.path.join(args.log_dir, "timeline-rank%d.log" % rank), "a")

    def mark(what, when=None):
        timeline.write("%d %s %.6f\n" % (restart, what, when or time.time()))
        timeline.flush()
    mark("process_started", STARTED)
    mark("torch_imported")

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    mark("process_group_formed")
    x, y = ddp_mlp.load_fashion_mnist("train")
    mark("data_loaded")
    n = len(x)
    total_steps = math.ceil(args.epochs * n / args.global_batch)
    model = DistributedDataParallel(ddp_mlp.build_model(args.seed))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9,
                                nesterov=True)
    start = 0
    checkpoint = newest_checkpoint(args.checkpoint_dir)
    if checkpoint:
        state = torch.load(checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"] + 1
    mark("model_ready")
    stream = ddp_mlp.Stream(n, args.seed)
    log = open(os.path.join(args.log_dir, "steps-rank%d.log" % rank), "a")

    for step in range(start, total_steps):
        begin, end = ddp_mlp.batch_positions(step, args.global_batch, world, rank)
        ids = stream.ids(begin, end)
        for group in optimizer.param_groups:
            group["lr"] = ddp_mlp.learning_rate(args.lr, step, total_steps)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(ddp_mlp.pixels(x[ids])), y[ids])
        loss.backward()
        optimizer.step()
        loss.item()
        log.write("%d %.6f %d\n" % (step, time.time(), restart))
        log.flush()
        if rank == 0 and (step + 1) % args.interval == 0:
            save(args.checkpoint_dir, step, model, optimizer)
        if restart > 0 and step + 1 - start >= args.steps_after_restart:
            break
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
