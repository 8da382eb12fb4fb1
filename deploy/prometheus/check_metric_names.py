#!/usr/bin/python3
"""Checks that monitoring files use only metric names the code exports.

  check_metric_names.py --source coordinator/coordinator_metrics.cc ...
      --recording rules/recording.yml FILE...

Exported names are the string literals starting with "podtrain_" in the
--source files (adjacent C++ literals joined first). A name used in a FILE
(rules, dashboard JSON) must be an exported name, or one plus the histogram
suffix _bucket, _sum or _count. Names with a colon must be recorded by a
--recording file. Prints every unknown name with its file; exit 1 if any.
"""
import argparse
import re
import sys

NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def exported_names(paths):
    names = set()
    for path in paths:
        text = open(path, encoding="utf-8").read()
        text = re.sub(r'"\s*\n\s*"', "", text)  # "abc_" "def" -> "abc_def"
        names.update(re.findall(r'"(podtrain_[a-z0-9_]+)"', text))
    return names


def recorded_names(paths):
    names = set()
    for path in paths:
        for line in open(path, encoding="utf-8"):
            match = re.match(r"\s*-?\s*record:\s*(\S+)", line)
            if match:
                names.add(match.group(1))
    return names


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", action="append", default=[])
    parser.add_argument("--recording", action="append", default=[])
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    exported = exported_names(args.source)
    recorded = recorded_names(args.recording)
    if not exported:
        print("check_metric_names: no exported names found", file=sys.stderr)
        return 1
    unknown = []
    used = 0
    for path in args.files:
        text = open(path, encoding="utf-8").read()
        for name in sorted(set(NAME.findall(text))):
            name = name.strip(":")  # "podtrain:" in prose is no metric
            if ":" in name:
                if "podtrain" not in name:
                    continue
                used += 1
                if name not in recorded:
                    unknown.append((path, name, "not a recording rule"))
                continue
            if not name.startswith("podtrain_"):
                continue
            used += 1
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name not in exported and base not in exported:
                unknown.append((path, name, "not exported by the code"))
    for path, name, why in unknown:
        print(f"{path}: {name}: {why}", file=sys.stderr)
    print(f"check_metric_names: {used} names used, {len(unknown)} unknown")
    return 1 if unknown else 0


if __name__ == "__main__":
    sys.exit(main())
