#!/usr/bin/python3
"""Static checks of podtrain's Dockerfiles (no Docker engine needed).

  check_dockerfiles.py --context DIR --label //pkg:name ... DOCKERFILE...

For every Dockerfile:
  - every FROM names an image with an explicit tag (not "latest") or an
    earlier stage, after the global ARGs are substituted; stage names are
    unique;
  - every COPY/ADD source without --from exists in the build context (DIR)
    and is not excluded by DIR/.dockerignore; every --from is an earlier
    stage or a tagged image;
  - every RUN is valid bash (`bash -n`) in a stage whose SHELL is bash;
  - a build stage runs deploy/install_deps.sh and `bazel build`, only of
    the --label targets given (which Bazel built for the test, so they
    exist), and bundles (deploy/docker/bundle.sh) only binaries it built;
  - every runtime stage copies a bundle the build stage made, runs as the
    unprivileged uid 65532 (k8s/ sets runAsUser: 65532), and its exec-form
    ENTRYPOINT is a binary in that bundle;
  - a Dockerfile whose name ends in .cuda builds with --config=cuda and its
    runtime stages are NVIDIA CUDA runtime images.
Also prints, for the shell test, the bundle commands: one line per
bundle.sh call, "OUT BINARY...". Exit 1 on any problem.
"""
import argparse
import fnmatch
import glob
import json
import os
import re
import subprocess
import sys


def instructions(path):
    """(line number, keyword, arguments) with continuations joined."""
    result, pending, start = [], "", 0
    for number, line in enumerate(open(path, encoding="utf-8"), 1):
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        pending += stripped
        keyword, _, rest = pending.partition(" ")
        result.append((start, keyword.upper(), rest.strip()))
        pending = ""
    return result


def substitute(text, args):
    return re.sub(r"\$\{(\w+)\}|\$(\w+)",
                  lambda m: args.get(m.group(1) or m.group(2), m.group(0)),
                  text)


def ignored(path, patterns):
    return any(fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/")
               or fnmatch.fnmatch(os.path.basename(path), p.replace("**/", ""))
               for p in patterns)


def check(path, context, labels, problems, bundles):
    def problem(line, message):
        problems.append(f"{path}:{line}: {message}")

    cuda = path.endswith(".cuda")
    patterns = [line.strip() for line in
                open(os.path.join(context, ".dockerignore"), encoding="utf-8")
                if line.strip() and not line.startswith("#")]
    global_args, stages, stage = {}, {}, None
    for line, keyword, rest in instructions(path):
        if keyword == "ARG" and stage is None:
            name, _, default = rest.partition("=")
            global_args[name] = substitute(default, global_args)
            continue
        if keyword == "FROM":
            match = re.match(r"(\S+)(?:\s+AS\s+(\S+))?$", substitute(rest, global_args),
                             re.IGNORECASE)
            if not match:
                problem(line, f"cannot parse FROM {rest}")
                continue
            image, name = match.group(1), match.group(2) or f"#{len(stages)}"
            if name in stages:
                problem(line, f"stage {name} defined twice")
            if image not in stages and (":" not in image or image.endswith(":latest")):
                problem(line, f"{image}: name an explicit tag")
            stage = stages[name] = {"image": image, "line": line, "shell": None,
                                    "runs": [], "copies": [], "user": None,
                                    "entrypoint": None, "built": set(), "bundles": {}}
            continue
        if stage is None:
            problem(line, f"{keyword} before FROM")
            continue
        if keyword == "SHELL":
            stage["shell"] = json.loads(rest)
        elif keyword == "RUN":
            stage["runs"].append((line, rest))
            if not stage["shell"] or os.path.basename(stage["shell"][0]) != "bash":
                problem(line, "RUN in a stage whose SHELL is not bash")
            parsed = subprocess.run(["bash", "-n"], input=rest, text=True,
                                    capture_output=True)
            if parsed.returncode != 0:
                problem(line, f"RUN is not valid bash: {parsed.stderr.strip()}")
            for build in re.findall(r"bazel build ([^&|;]*)", rest):
                if cuda and "--config=cuda" not in build:
                    problem(line, "the CUDA variant must build with --config=cuda")
                for label in re.findall(r"//[\w/.-]+:[\w.-]+", build):
                    if label not in labels:
                        problem(line, f"{label} is not a target the test built "
                                "(add it to deploy/docker/BUILD.bazel)")
                    stage["built"].add(label)
            for out, binaries in re.findall(
                    r"deploy/docker/bundle\.sh\s+(\S+)((?:\s+bazel-bin/\S+)+)", rest):
                stage["bundles"][out] = binaries.split()
                bundles.append(" ".join([out] + binaries.split()))
                for binary in binaries.split():
                    package, _, name = binary[len("bazel-bin/"):].rpartition("/")
                    if f"//{package}:{name}" not in stage["built"]:
                        problem(line, f"bundles {binary}, which this RUN does not build")
        elif keyword in ("COPY", "ADD"):
            words = rest.split()
            options = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            sources = paths[:-1]
            source_stage = next((o.split("=", 1)[1] for o in options
                                 if o.startswith("--from=")), None)
            stage["copies"].append((line, source_stage, sources, paths[-1]))
            if source_stage is not None:
                if source_stage not in stages and (
                        ":" not in source_stage or source_stage.endswith(":latest")):
                    problem(line, f"--from={source_stage}: not an earlier stage")
                continue
            for source in sources:
                if source == ".":
                    continue
                found = glob.glob(os.path.join(context, source))
                if not found:
                    problem(line, f"COPY source {source} does not exist")
                elif ignored(os.path.normpath(source), patterns):
                    problem(line, f"COPY source {source} is excluded by .dockerignore")
        elif keyword == "USER":
            stage["user"] = rest
        elif keyword == "ENTRYPOINT":
            try:
                stage["entrypoint"] = json.loads(rest)
            except json.JSONDecodeError:
                stage["entrypoint"] = []  # still a runtime stage
                problem(line, "ENTRYPOINT must be exec form (a JSON array)")

    builds = [s for s in stages.values() if s["runs"]]
    if not any("deploy/install_deps.sh" in run for s in builds for _, run in s["runs"]):
        problem(0, "no stage runs deploy/install_deps.sh")
    if not any(s["built"] for s in builds):
        problem(0, "no stage runs bazel build")
    made = {out: binaries for s in builds for out, binaries in s["bundles"].items()}
    runtimes = {n: s for n, s in stages.items() if s["entrypoint"] is not None}
    if {"coordinator", "worker"} - set(runtimes):
        problem(0, "needs runtime stages named coordinator and worker")
    for name, runtime in runtimes.items():
        line = runtime["line"]
        if cuda and not re.match(r"nvidia/cuda:[\d.]+-runtime-", runtime["image"]):
            problem(line, f"stage {name}: CUDA runtime stages start FROM nvidia/cuda:*-runtime-*")
        if runtime["user"] != "65532:65532":
            problem(line, f"stage {name}: USER must be 65532:65532 (k8s runAsUser)")
        copied = [(src, dst) for _, frm, srcs, dst in runtime["copies"]
                  if frm in stages for src in srcs]
        binaries = []
        for src, dst in copied:
            if src not in made:
                problem(line, f"stage {name} copies {src}, which no build stage bundles")
                continue
            binaries += [dst.rstrip("/") + "/bin/" + os.path.basename(b) for b in made[src]]
        entry = runtime["entrypoint"]
        if not entry or entry[0] not in binaries:
            problem(line, f"stage {name}: ENTRYPOINT {entry} is not a bundled binary "
                    f"({', '.join(binaries)})")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--context", required=True)
    parser.add_argument("--label", action="append", default=[])
    parser.add_argument("dockerfiles", nargs="+")
    args = parser.parse_args()
    problems, bundles = [], []
    for path in args.dockerfiles:
        check(path, args.context, set(args.label), problems, bundles)
    for problem in problems:
        print(f"PROBLEM {problem}", file=sys.stderr)
    for bundle in bundles:
        print(bundle)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
