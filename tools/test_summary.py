#!/usr/bin/env python3
"""Counts test cases after `bazel test`, for the `N passed, N failed` line.

Reads Bazel's per-target summary lines from a log (argument 1) and each
target's test.xml under bazel-testlogs/. A target counts as its gtest cases;
a target that failed without a failing case in its XML (a crash, a timeout, a
build failure) counts as one failed case. Extra checks (such as the format
check) are passed as NAME=PASSED|FAILED arguments and count as one case each.

Prints one line per failure, then `N passed, N failed` last.
"""

import os
import re
import sys
import xml.etree.ElementTree as ElementTree

TARGET_LINE = re.compile(
    r"^(//\S+)\s+(?:\(cached\)\s+)?(PASSED|FAILED|TIMEOUT|NO STATUS|"
    r"FAILED TO BUILD|INCOMPLETE|FLAKY|SKIPPED)\b")


def cases_in(xml_path):
    """Returns (passed, failed_names) from a gtest/Bazel JUnit XML file."""
    passed, failed = 0, []
    try:
        root = ElementTree.parse(xml_path).getroot()
    except (OSError, ElementTree.ParseError):
        return 0, []
    for case in root.iter("testcase"):
        name = "%s.%s" % (case.get("classname", ""), case.get("name", ""))
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(name)
        elif case.find("skipped") is not None or case.get("status") == "notrun":
            # A skipped test is not a pass; make it visible as a failure.
            failed.append(name + " (skipped)")
        else:
            passed += 1
    return passed, failed


def main(argv):
    log_path, extra = argv[1], argv[2:]
    passed, failures = 0, []
    seen = set()
    with open(log_path, errors="replace") as log:
        for line in log:
            match = TARGET_LINE.match(line.strip())
            if not match or match.group(1) in seen:
                continue
            target, status = match.group(1), match.group(2)
            seen.add(target)
            if status == "SKIPPED":
                continue  # incompatible with this configuration (CUDA-only)
            xml_path = os.path.join("bazel-testlogs",
                                    target[2:].replace(":", "/"), "test.xml")
            case_passed, case_failed = cases_in(xml_path)
            passed += case_passed
            failures += ["%s %s" % (target, name) for name in case_failed]
            if status not in ("PASSED", "FLAKY") and not case_failed:
                failures.append("%s %s" % (target, status))
    for item in extra:
        name, _, status = item.partition("=")
        if status == "PASSED":
            passed += 1
        else:
            failures.append("%s %s" % (name, status))
    if not seen:
        failures.append("bazel test reported no test targets")
    for failure in failures:
        print("FAILED: " + failure)
    print("%d passed, %d failed" % (passed, len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
