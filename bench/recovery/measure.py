"""Kills one of two training workers mid-run and times the recovery.

  measure.py podtrain --repo R --bin BIN --work DIR --out RESULT.json
                      [--kill-step K] [--replace] [--coordinator-flag F]...
  measure.py torchrun --repo R --work DIR --out RESULT.json
                      [--kill-step K] [--monitor-interval S]

Both sides train the reference MLP on Fashion-MNIST at world 2, checkpoint
every 50 steps (podtrain: the job's checkpoint.interval_steps; torchrun:
bench/recovery/torchrun_train.py), and are killed the same way: once rank 0
has reported step K (default 124: the checkpoint of step 99 is the newest,
so a restart from it redoes about 25 steps, the expected loss of a kill at a
uniformly random time with a 50-step interval), the process of the rank-1
worker gets SIGKILL. Measured:

  seconds     kill -> the first step completed by the recovered world
              (podtrain: the coordinator's timestamp of rank 0's report of a
              step of a newer generation; torchrun: rank 0's log line of a
              step of a restarted worker group)
  redone      steps completed before the recovery that were trained again:
              last step reported by the old world - first step of the new
              one + 1

podtrain runs through deploy/local/run.sh (min_workers 1: the survivor may
go on alone); with --replace the killed worker is started again at once
(what Kubernetes would do), as torchrun restarts its workers. torchrun runs
one agent with 2 workers, c10d rendezvous on 127.0.0.1, --max_restarts 3,
--redirects 2 --tee 1 (Debian's torchrun on Python 3.11 needs both).
"""

import argparse
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time

PYTHON = "/usr/bin/python3"


def wait_for(predicate, timeout, poll=0.005):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    return None


def parse_time(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class EventTail:
    """Step and generation events of a podtrain job, read as they arrive."""

    def __init__(self, path):
        self.path, self.offset, self.buffer = path, 0, ""
        self.steps = []  # (step, time, generation, world size) of rank 0's reports
        self.generations = []  # (generation, world size, time, reason)
        self.committed = []  # (step, time)

    def poll(self):
        try:
            with open(self.path) as f:
                f.seek(self.offset)
                chunk = f.read()
                self.offset = f.tell()
        except OSError:
            return
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            t = parse_time(event["time"])
            job = event.get("job", {})
            if "stepProgress" in event:
                self.steps.append((int(event["stepProgress"].get("step", 0)), t,
                                   int(job.get("generation", 0)), int(job.get("worldSize", 0))))
            if "generationChanged" in event:
                g = event["generationChanged"]
                self.generations.append((int(g.get("generation", 0)),
                                         int(g.get("worldSize", 0)), t, g.get("reason", "")))
            if "checkpointCommitted" in event:
                self.committed.append((int(event["checkpointCommitted"].get("step", 0)), t))

    def last_step(self):
        self.poll()
        return self.steps[-1][0] if self.steps else -1


GLOG = re.compile(r"^[IWEF](\d{8}) (\d\d:\d\d:\d\d\.\d{6}) +\d+ \S+\] (.*)$")


def glog_lines(path):
    """(unix time, message) of a glog file's lines."""
    rows = []
    try:
        for line in open(path, errors="replace"):
            m = GLOG.match(line)
            if m:
                t = datetime.datetime.strptime(m.group(1) + " " + m.group(2), "%Y%m%d %H:%M:%S.%f")
                rows.append((t.timestamp(), m.group(3)))
    except OSError:
        pass
    return rows


def first_after(rows, t, pattern):
    for when, message in rows:
        if when >= t and re.search(pattern, message):
            return when
    return None


def podtrain_timeline(logs, t_kill, generation, first_new):
    """Milestones of the recovery, seconds after the kill, from the logs."""
    coordinator = glog_lines(os.path.join(logs, "coordinator.log"))
    survivor = glog_lines(os.path.join(logs, "worker-0.log"))
    marks = [
        ("survivor's all-reduce fails (it sees the peer gone)",
         first_after(survivor, t_kill, r"all-reduce failed|generation \d+ ends")),
        ("coordinator opens the rendezvous (job RESTARTING)",
         first_after(coordinator, t_kill, r"-> RESTARTING")),
        ("coordinator forms generation %d" % (generation + 1),
         first_after(coordinator, t_kill, r"generation %d with" % (generation + 1))),
        ("survivor has joined generation %d" % (generation + 1),
         first_after(survivor, t_kill, r"generation %d, rank" % (generation + 1))),
        ("first step of the new world reported", first_new),
    ]
    return [(what, None if t is None else round(t - t_kill, 3)) for what, t in marks]


def podtrain(args):
    work = args.work
    os.makedirs(work, exist_ok=True)
    events_path = os.path.join(work, "events.jsonl")
    command = ["bash", os.path.join(args.repo, "deploy/local/run.sh"), "--bin-dir", args.bin,
               "--workers", "2", "--workdir", os.path.join(work, "run"),
               "--job-template", args.job_template, "--events", events_path,
               "--no-prometheus", "--worker-flag", "--threads=1"]
    for flag in args.coordinator_flag:
        command += ["--coordinator-flag", flag]
    if os.path.exists(events_path):
        os.remove(events_path)
    log = open(os.path.join(work, "run.log"), "w")
    run = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    tail = EventTail(events_path)
    result = {"system": "podtrain", "kill_step": args.kill_step, "replace": args.replace,
              "coordinator_flags": args.coordinator_flag}
    replacement = None
    try:
        if not wait_for(lambda: tail.last_step() >= args.kill_step, 300):
            result["error"] = "step %d never reported" % args.kill_step
            return result
        pid_file = os.path.join(work, "run", "worker-1.pid")
        victim = int(open(pid_file).read())
        generation = tail.steps[-1][2]
        t_kill = time.time()
        os.kill(victim, signal.SIGKILL)
        if args.replace:
            coordinator = "127.0.0.1:" + open(os.path.join(work, "run", "coordinator.port")).read().strip()
            replacement = subprocess.Popen(
                [os.path.join(args.bin, "worker/podtrain-worker"), "--coordinator=" + coordinator,
                 "--worker_id=worker-1", "--metrics_address=", "--threads=1"],
                stdout=open(os.path.join(work, "replacement.log"), "w"), stderr=subprocess.STDOUT)
        result["t_kill"] = t_kill

        # Recovered: a few steps into a newer generation, and with --replace
        # into one of the full world again (so a second restart shows).
        full = 2 if args.replace else 1

        def recovered():
            tail.poll()
            new = [s for s in tail.steps if s[2] > generation and s[3] >= full]
            return new if len(new) >= args.steps_after else None
        new = wait_for(recovered, 120)
        time.sleep(args.settle)
        tail.poll()
        if not new:
            result["error"] = "no steps of a newer generation within 120 s"
            return result
        old = [s for s in tail.steps if s[2] <= generation]
        first_new = next(s for s in tail.steps if s[2] > generation)
        result["last_old_step"] = max(s[0] for s in old)
        result["first_new_step"] = first_new[0]
        result["seconds"] = first_new[1] - t_kill
        result["redone"] = result["last_old_step"] - first_new[0] + 1
        result["generations"] = [g for g in tail.generations if g[0] > generation]
        result["committed_before_kill"] = max([c[0] for c in tail.committed if c[1] < t_kill] or [-1])
        # Every rollback after the kill counts: with --replace, the
        # replacement joining starts one more generation from the commit.
        rolled, top, seen = 0, result["last_old_step"], generation
        later = [s for s in tail.steps if s[2] > generation]
        for step, _, gen, _ in later:
            if gen != seen:
                rolled += max(0, top - step + 1)
                seen = gen
            top = max(top, step)
        result["redone_total"] = rolled
        result["timeline"] = podtrain_timeline(os.path.join(work, "run", "logs"), t_kill,
                                               generation, first_new[1])
        full_world = [s for s in later if s[3] >= 2]
        if full_world:
            result["seconds_to_world_2"] = full_world[0][1] - t_kill
        result["step_times_after_kill"] = [(s[0], round(s[1] - t_kill, 3), s[2], s[3])
                                           for s in tail.steps if s[1] > t_kill][:60]
        return result
    finally:
        cancel(args, work)
        try:
            run.wait(timeout=60)
        except subprocess.TimeoutExpired:
            run.terminate()
            run.wait()
        if replacement is not None:
            replacement.terminate()
            try:
                replacement.wait(timeout=20)
            except subprocess.TimeoutExpired:
                replacement.kill()
                replacement.wait()


def cancel(args, work):
    try:
        port = open(os.path.join(work, "run", "coordinator.port")).read().strip()
    except OSError:
        return
    subprocess.run([os.path.join(args.bin, "cli/podtrain"), "--coordinator=127.0.0.1:" + port,
                    "cancel", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def read_steps(path):
    rows = []
    try:
        for line in open(path):
            parts = line.split()
            if len(parts) == 3:
                rows.append((int(parts[0]), float(parts[1]), int(parts[2])))
    except OSError:
        pass
    return rows


def torchrun(args):
    work = args.work
    checkpoints, logs = os.path.join(work, "checkpoints"), os.path.join(work, "logs")
    for d in (checkpoints, logs):
        os.makedirs(d, exist_ok=True)
    sock = __import__("socket").socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    command = ["/usr/bin/torchrun", "--nnodes", "1", "--nproc_per_node", "2",
               "--rdzv_backend", "c10d", "--rdzv_endpoint", "127.0.0.1:%d" % port,
               "--rdzv_id", "bench-recovery", "--max_restarts", "3",
               "--monitor_interval", str(args.monitor_interval),
               "--redirects", "2", "--tee", "1", "--log_dir", os.path.join(work, "torchrun-logs"),
               os.path.join(args.repo, "bench/recovery/torchrun_train.py"),
               "--checkpoint_dir", checkpoints, "--log_dir", logs,
               "--interval", "50", "--steps_after_restart", str(args.steps_after)]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    log = open(os.path.join(work, "torchrun.log"), "w")
    run = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    steps_path = os.path.join(logs, "steps-rank0.log")
    result = {"system": "torchrun", "kill_step": args.kill_step,
              "monitor_interval": args.monitor_interval}
    try:
        def reached():
            rows = read_steps(steps_path)
            return rows and rows[-1][0] >= args.kill_step
        if not wait_for(reached, 300):
            result["error"] = "step %d never logged" % args.kill_step
            return result
        victim = int(open(os.path.join(logs, "pid-rank1-restart0")).read())
        t_kill = time.time()
        os.kill(victim, signal.SIGKILL)
        result["t_kill"] = t_kill

        def recovered():
            return [r for r in read_steps(steps_path) if r[2] > 0]
        new = wait_for(recovered, 120)
        if not new:
            result["error"] = "no step of a restarted worker group within 120 s"
            return result
        rows = read_steps(steps_path)
        old = [r for r in rows if r[2] == 0]
        result["last_old_step"] = max(r[0] for r in old)
        result["first_new_step"] = new[0][0]
        result["seconds"] = new[0][1] - t_kill
        result["redone"] = result["last_old_step"] - new[0][0] + 1
        result["redone_total"] = result["redone"]
        marks = {}
        try:
            for line in open(os.path.join(logs, "timeline-rank0.log")):
                restart, what, when = line.split()
                if int(restart) == 1:
                    marks[what] = float(when)
        except OSError:
            pass
        names = [("process_started", "restarted rank 0 process starts (agent noticed, stopped, re-rendezvoused, spawned)"),
                 ("torch_imported", "import torch done"),
                 ("process_group_formed", "process group formed"),
                 ("data_loaded", "Fashion-MNIST loaded"),
                 ("model_ready", "model built, checkpoint loaded")]
        result["timeline"] = [(title, round(marks[key] - t_kill, 3) if key in marks else None)
                              for key, title in names]
        result["timeline"].append(("first step of the new world logged", round(new[0][1] - t_kill, 3)))
        result["step_times_after_kill"] = [(r[0], round(r[1] - t_kill, 3), r[2])
                                           for r in rows if r[1] > t_kill][:40]
        return result
    finally:
        try:
            run.wait(timeout=120)
        except subprocess.TimeoutExpired:
            run.send_signal(signal.SIGTERM)
            try:
                run.wait(timeout=30)
            except subprocess.TimeoutExpired:
                run.kill()
                run.wait()
        result["exit_status"] = run.returncode


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("system", choices=["podtrain", "torchrun"])
    parser.add_argument("--repo", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--bin", default="")
    parser.add_argument("--job-template", default="")
    parser.add_argument("--kill-step", type=int, default=124)
    parser.add_argument("--steps-after", type=int, default=5)
    parser.add_argument("--settle", type=float, default=0.0,
                        help="podtrain: keep watching this long after recovery")
    parser.add_argument("--replace", action="store_true")
    parser.add_argument("--coordinator-flag", action="append", default=[])
    parser.add_argument("--monitor-interval", type=float, default=5.0)
    args = parser.parse_args()
    result = podtrain(args) if args.system == "podtrain" else torchrun(args)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "step_times_after_kill"}))
    return 0 if "seconds" in result else 1


if __name__ == "__main__":
    sys.exit(main())
