#!/usr/bin/python3
"""Checks podtrain's Grafana dashboard, offline or against a live Prometheus.

  check_dashboard.py static DASHBOARD.json --promtool-rules OUT.yml
      Structure: uid, title, integer schemaVersion, a datasource variable
      and a `job` variable (plus `instance`); every panel has a type, a
      title, a gridPos inside the 24-column grid that overlaps no other
      panel, the ${datasource} data source, and targets with an expr and a
      unique refId; the panels cover every topic of TOPICS. Writes every
      expr (variables substituted) as a recording rule to OUT.yml, for
      `promtool check rules` to parse.

  check_dashboard.py live DASHBOARD.json --prometheus http://HOST:PORT
      --start UNIX --end UNIX [--var job=REGEX]... [--scrape-interval S]
      [--step S]
      Runs every target's expr, with the variables substituted as Grafana
      would, through Prometheus' /api/v1/query_range over [start, end]; a
      target whose answer has no series with at least one number (not NaN)
      fails, naming its panel. $__rate_interval is Grafana's:
      max($__interval + scrape interval, 4 x scrape interval), $__interval
      the step.

Prints one line per problem and a summary; exit 1 on any problem.
"""
import argparse
import json
import math
import re
import sys
import urllib.parse
import urllib.request

# Topics the issue asks the dashboard to show: (what, title regex).
TOPICS = [
    ("examples/s", r"examples/s"),
    ("step time p50/p99", r"step time p50 / p99"),
    ("data wait", r"data wait"),
    ("all-reduce time", r"all-reduce time"),
    ("loss", r"^loss$"),
    ("learning rate", r"learning rate"),
    ("epoch progress", r"epoch progress"),
    ("workers", r"^workers$"),
    ("generations", r"generations"),
    ("checkpoint age", r"checkpoint age"),
    ("checkpoint duration", r"checkpoint duration"),
    ("restarts", r"restarts"),
]


def panels(dashboard):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows


def substitute(expr, variables, rate_interval, interval):
    expr = expr.replace("$__rate_interval", rate_interval)
    expr = expr.replace("$__interval", interval)
    for name, value in variables.items():
        expr = re.sub(r"\$\{%s\}|\$%s\b" % (name, name), value, expr)
    return expr


def check_static(dashboard, rules_out):
    problems = []
    for key in ("uid", "title"):
        if not isinstance(dashboard.get(key), str) or not dashboard[key]:
            problems.append(f"dashboard: no {key}")
    if not isinstance(dashboard.get("schemaVersion"), int):
        problems.append("dashboard: schemaVersion must be an integer")
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    source = variables.get("datasource", {})
    if source.get("type") != "datasource" or source.get("query") != "prometheus":
        problems.append("templating: no Prometheus datasource variable `datasource`")
    for name, label in (("job", "job_name"), ("instance", "instance")):
        variable = variables.get(name, {})
        query = variable.get("query", {})
        query = query.get("query", "") if isinstance(query, dict) else query
        if variable.get("type") != "query" or f", {label})" not in query:
            problems.append(f"templating: no query variable `{name}` over label {label}")
    titles, cells, exprs = [], {}, []
    for panel in panels(dashboard):
        title = panel.get("title", "")
        where = f"panel '{title}'"
        grid = panel.get("gridPos", {})
        if not title or not panel.get("type"):
            problems.append(f"{where}: needs a type and a title")
        if not all(isinstance(grid.get(k), int) for k in "hwxy") or \
                grid["x"] < 0 or grid["x"] + grid["w"] > 24:
            problems.append(f"{where}: gridPos outside the 24-column grid")
            continue
        for row in range(grid["y"], grid["y"] + grid["h"]):
            for column in range(grid["x"], grid["x"] + grid["w"]):
                if (row, column) in cells:
                    problems.append(f"{where}: overlaps panel '{cells[(row, column)]}'")
                    break
                cells[(row, column)] = title
            else:
                continue
            break
        if panel.get("type") == "row":
            continue
        titles.append(title)
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"{where}: data source must be ${{datasource}}")
        targets = panel.get("targets", [])
        if not targets:
            problems.append(f"{where}: no targets")
        ref_ids = [t.get("refId") for t in targets]
        if len(set(ref_ids)) != len(ref_ids) or None in ref_ids:
            problems.append(f"{where}: refIds missing or repeated")
        for target in targets:
            if not target.get("expr"):
                problems.append(f"{where} {target.get('refId')}: no expr")
            else:
                exprs.append((title, target.get("refId"), target["expr"]))
    for topic, pattern in TOPICS:
        if not any(re.search(pattern, t, re.IGNORECASE) for t in titles):
            problems.append(f"no panel for {topic}")
    with open(rules_out, "w", encoding="utf-8") as out:
        out.write("groups:\n  - name: dashboard_exprs\n    rules:\n")
        for i, (title, ref, expr) in enumerate(exprs):
            concrete = substitute(expr, {"job": ".*", "instance": ".*"}, "1m", "15s")
            out.write(f"      # {title} {ref}\n      - record: dashboard:expr_{i}\n"
                      f"        expr: {json.dumps(concrete)}\n")
    return problems, f"{len(titles)} panels, {len(exprs)} queries"


def query_range(prometheus, expr, start, end, step):
    url = f"{prometheus}/api/v1/query_range?" + urllib.parse.urlencode(
        {"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(url, timeout=30) as response:
        answer = json.load(response)
    if answer.get("status") != "success":
        raise RuntimeError(answer.get("error", "query failed"))
    return answer["data"]["result"]


def check_live(dashboard, args):
    variables = dict(v.split("=", 1) for v in args.var)
    for name in ("job", "instance"):
        variables.setdefault(name, ".*")
    interval = args.step
    rate_interval = max(interval + args.scrape_interval, 4 * args.scrape_interval)
    problems, answered = [], 0
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            expr = substitute(target["expr"], variables, f"{rate_interval:g}s", f"{interval:g}s")
            where = f"panel '{panel['title']}' {target['refId']}"
            try:
                result = query_range(args.prometheus, expr, args.start, args.end, interval)
            except Exception as error:  # noqa: BLE001 - report any failure
                problems.append(f"{where}: {expr}: {error}")
                continue
            numbers = sum(1 for series in result for _, value in series["values"]
                          if not math.isnan(float(value)))
            if numbers == 0:
                problems.append(f"{where}: no data: {expr}")
            else:
                answered += 1
                print(f"ok {where}: {len(result)} series, {numbers} samples")
    return problems, f"{answered} queries returned data"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["static", "live"])
    parser.add_argument("dashboard")
    parser.add_argument("--promtool-rules")
    parser.add_argument("--prometheus")
    parser.add_argument("--start", type=float)
    parser.add_argument("--end", type=float)
    parser.add_argument("--var", action="append", default=[])
    parser.add_argument("--scrape-interval", type=float, default=1.0)
    parser.add_argument("--step", type=float, default=2.0)
    args = parser.parse_args()
    dashboard = json.load(open(args.dashboard, encoding="utf-8"))
    if args.mode == "static":
        if not args.promtool_rules:
            parser.error("static needs --promtool-rules")
        problems, summary = check_static(dashboard, args.promtool_rules)
    else:
        if not (args.prometheus and args.start and args.end):
            parser.error("live needs --prometheus, --start and --end")
        problems, summary = check_live(dashboard, args)
    for problem in problems:
        print(f"PROBLEM {problem}")
    print(f"check_dashboard {args.mode}: {summary}, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
