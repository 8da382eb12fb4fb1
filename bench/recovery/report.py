"""bench_recovery.sh's detail section and BENCH line from measure.py results.

  report.py DIR KILL_STEP > recovery.md   (BENCH line on stderr)

DIR holds <label>-<i>.json for the labels podtrain, podtrain-replace,
torchrun and torchrun-default. Figures are medians over the repeats.
"""

import glob
import json
import os
import re
import statistics
import sys

TARGET_SECONDS = 2.0
TARGET_REDONE = 1
LABELS = [
    ("podtrain", "podtrain, the survivor goes on alone (min_workers 1)"),
    ("podtrain-replace", "podtrain, the killed worker restarted at once"),
    ("torchrun", "torchrun, --monitor_interval 0.1"),
    ("torchrun-default", "torchrun, --monitor_interval 5 (1.13's default)"),
]


def load(directory, label):
    runs = []
    for path in sorted(glob.glob(os.path.join(directory, label + "-*.json"))):
        if re.fullmatch(re.escape(label) + r"-\d+\.json", os.path.basename(path)):
            try:
                runs.append(json.load(open(path)))
            except ValueError:
                runs.append({"error": "unreadable " + path})
    return runs


def median(runs, key):
    values = [r[key] for r in runs if key in r]
    return statistics.median(values) if values else None


def fmt(x, spec):
    return "n/a" if x is None else spec % x


def main():
    directory, kill_step = sys.argv[1], int(sys.argv[2])
    results = {label: load(directory, label) for label, _ in LABELS}
    out = []
    w = out.append
    w("Two workers train the reference MLP on Fashion-MNIST at world 2 and "
      "checkpoint every 50 steps; once rank 0 has finished step %d (the "
      "newest checkpoint is of step %d, so a restart from it redoes ~%d "
      "steps, the expected loss of a kill at a random time), the rank-1 "
      "worker's process gets SIGKILL. *seconds*: from the kill to the first "
      "step the recovered world completes (podtrain: the coordinator's "
      "timestamp of rank 0's report; torchrun: rank 0's log line after the "
      "step). *redone*: steps finished before the kill and trained again "
      "(summed over every restart the kill caused). podtrain through "
      "`deploy/local/run.sh` with the coordinator's default flags; torchrun "
      "(Debian python3-torch, `bench/recovery/torchrun_train.py`): one agent, "
      "2 workers, c10d rendezvous on 127.0.0.1, `--max_restarts 3 "
      "--redirects 2 --tee 1`. Driver: `bench/recovery/measure.py`." % (
          kill_step, (kill_step + 1) // 50 * 50 - 1, kill_step - (kill_step + 1) // 50 * 50 + 1))
    w("")
    w("| run | repeats | seconds (median) | redone (median) | seconds to world 2 again | generations after the kill |")
    w("| --- | --- | --- | --- | --- | --- |")
    for label, title in LABELS:
        runs = results[label]
        good = [r for r in runs if "seconds" in r]
        generations = "; ".join(
            ", ".join("gen %d world %d: %s" % (g[0], g[1], g[3]) for g in r.get("generations", []))
            for r in good if r.get("generations")) or "—"
        w("| %s | %d | %s | %s | %s | %s |" % (
            title, len(good), fmt(median(good, "seconds"), "%.2f s"),
            fmt(median(good, "redone_total"), "%.0f"),
            fmt(median(good, "seconds_to_world_2"), "%.2f s") if label.startswith("podtrain")
            else fmt(median(good, "seconds"), "%.2f s"), generations))
        for r in runs:
            if "seconds" not in r:
                w("|  ↳ failed run | | %s | | | |" % r.get("error", "unknown error"))
    w("")

    for label, title in LABELS:
        run = next((r for r in results[label] if r.get("timeline")), None)
        if run is None:
            continue
        w("Where the time goes, %s (first run; seconds after the kill):" % title)
        w("")
        w("| milestone | s |")
        w("| --- | --- |")
        for what, when in run["timeline"]:
            w("| %s | %s |" % (what, fmt(when, "%.3f")))
        w("")

    pod = [r for r in results["podtrain"] if "seconds" in r]
    peer = [r for r in results["torchrun"] if "seconds" in r]
    p_s, t_s = median(pod, "seconds"), median(peer, "seconds")
    p_r = median(pod, "redone_total")
    met_s = p_s is not None and p_s < TARGET_SECONDS
    met_r = p_r is not None and p_r <= TARGET_REDONE
    w("Target: < %.0f s and <= %d step redone. podtrain: %s s (%s), %s steps redone (%s)." % (
        TARGET_SECONDS, TARGET_REDONE, fmt(p_s, "%.2f"), "met" if met_s else "missed",
        fmt(p_r, "%.0f"), "met" if met_r else "missed"))
    marks = dict((pod[0].get("timeline") or []) if pod else [])
    opened = marks.get("coordinator opens the rendezvous (job RESTARTING)")
    formed = next((v for k, v in marks.items() if k.startswith("coordinator forms")), None)
    joined = next((v for k, v in marks.items() if k.startswith("survivor has joined")), None)
    if opened is not None and formed is not None and joined is not None and p_s is not None:
        w("")
        w("What podtrain's recovery time is made of (survivor run, default flags): %.0f ms "
          "until the survivor's all-reduce fails and its request to rejoin opens the "
          "rendezvous; %.0f ms in which the "
          "coordinator holds the rendezvous: the first restart's backoff "
          "(`--restart_backoff_ms`, 500 ms, doubling per restart) and then the last call "
          "(`--last_call_ms`, 300 ms) spent waiting for the killed worker, which still "
          "counts as a member until its lease (`--lease_ms`, 3 s) runs out; %.0f ms from "
          "the survivor's join to its first step (form the communicator, agree on the "
          "held state and have it journaled, open the assignment stream, train one "
          "step). With a replacement the last call is skipped: the restarted worker "
          "registers during the backoff, which drops the dead incarnation at once."
          % (1000 * opened, 1000 * (formed - opened), 1000 * (p_s - joined)))
    w("")
    if met_r:
        w("Why nothing is redone: the new world continues from the model the survivor "
          "holds in memory (the ranks agree on it over the new communicator, the "
          "coordinator journals the resume, `ResumeFromHeldState`, and the holder "
          "broadcasts model and optimizer state to any replacement), so only the step "
          "the killed worker never finished is trained (once). Every rank logs a step's "
          "ids before its gradients reach a peer, so the audit finds the dead rank's "
          "records of the steps the survivor completed. torchrun restarts every worker "
          "from its last save and redoes the steps since.")
    else:
        w("Why the steps are redone: the new world resumed from the last committed "
          "checkpoint, not from a survivor's in-memory state: no rank held a state "
          "extending the head, or the coordinator refused the resume (see the "
          "workers' logs in the run directory).")
    print("\n".join(out))
    ratio = t_s / p_s if p_s and t_s else None
    sys.stderr.write(
        'BENCH name=recovery podtrain=%s peer=%s ratio=%s target="<2 s and <=1 step redone" '
        "unit=s met=%s podtrain_redone=%s peer_redone=%s\n" % (
            fmt(p_s, "%.2f"), fmt(t_s, "%.2f"), fmt(ratio, "%.2f"),
            "yes" if met_s and met_r else "no", fmt(p_r, "%.0f"),
            fmt(median(peer, "redone_total"), "%.0f")))


if __name__ == "__main__":
    main()
