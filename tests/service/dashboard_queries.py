#!/usr/bin/python3
"""Checks a Grafana dashboard's queries against a qopt-server's /metrics page.

usage: dashboard_queries.py DASHBOARD_JSON METRICS_URL [--step STEP]... [--wait SECONDS]

Every metric name a panel's `expr` or a query variable reads must be on the page (a
`_bucket`, `_sum` or `_count` name as a sample of a histogram family): histograms appear
after their first observation, so the page is read again until all are there or the wait
is over. Every expr must parse (`promtool check rules`, with Grafana's variables replaced);
every panel reads the `${DS_PROMETHEUS}` data source; and for each --step, that step's
`qopt_step_duration_seconds_count` must be above 0. Problems are printed as "FAIL ...";
the exit status is 1 when there is any.
"""
import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

DATASOURCE_UID = "${DS_PROMETHEUS}"
# PromQL words that look like metric names: aggregations and keywords written without a
# parenthesis right after them, and the float literals.
PROMQL_WORDS = {"sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk", "bottomk",
                "quantile", "count_values", "limitk", "limit_ratio", "by", "without", "on", "ignoring",
                "group_left", "group_right", "bool", "and", "or", "unless", "offset", "atan2", "inf", "nan"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr):
    """The metric names an expr reads: what is left once strings, label matchers, ranges,
    grouping clauses, Grafana variables, function calls and keywords are taken out."""
    e = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\{?\w+\}?", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", e):
        if m.group(2) is None and m.group(1).lower() not in PROMQL_WORDS:
            names.add(m.group(1))
    return names


def as_promql(expr):
    """The expr as Prometheus gets it from Grafana: ranges and label values filled in."""
    e = re.sub(r"\[\$\{?\w+\}?\]", "[5m]", expr)
    return re.sub(r"\$\{?\w+\}?", ".*", e)


def panels_of(dashboard):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def queries(dashboard, fail):
    """(where, expr) of every panel target and query variable; structural problems to `fail`."""
    found = []
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    ds = variables.get("DS_PROMETHEUS")
    if ds is None or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        fail("the dashboard has no data source variable DS_PROMETHEUS of type prometheus")
    ids = set()
    for panel in panels_of(dashboard):
        where = "panel '%s'" % panel.get("title", "?")
        if panel.get("id") in ids:
            fail("%s: id %s is used twice" % (where, panel.get("id")))
        ids.add(panel.get("id"))
        if panel.get("type") == "row":
            continue
        if panel.get("datasource", {}).get("uid") != DATASOURCE_UID:
            fail("%s: its data source is not %s" % (where, DATASOURCE_UID))
        if not panel.get("targets"):
            fail("%s: no queries" % where)
        for target in panel.get("targets", []):
            if not target.get("expr", "").strip():
                fail("%s (%s): an empty expr" % (where, target.get("refId", "?")))
            else:
                found.append(("%s (%s)" % (where, target.get("refId", "?")), target["expr"]))
    for name, v in variables.items():
        if v.get("type") != "query":
            continue
        query = v.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        # label_values(METRIC, LABEL) reads METRIC; the label is no metric.
        m = re.fullmatch(r"\s*label_values\(\s*(.*),\s*\w+\s*\)\s*", query)
        found.append(("variable '%s'" % name, m.group(1) if m else query))
    return found


def scrape(url):
    """(sample names, {family: type}) of a /metrics page in Prometheus' text format."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ", 3)
            types[family] = kind
        elif line and not line.startswith("#"):
            name = re.match(r"[A-Za-z_:][\w:]*", line).group(0)
            labels = re.match(r"[\w:]+(\{[^}]*\})?", line).group(1) or ""
            samples.setdefault(name, {})[labels] = float(line.rsplit(" ", 1)[1])
    return samples, types


def missing_from(name, samples, types):
    """Why `name` is not on the page, or None when it is."""
    if name not in samples:
        return "%s is not in /metrics" % name
    for suffix in HISTOGRAM_SUFFIXES:
        family = name[:-len(suffix)]
        if name.endswith(suffix) and family in types and types[family] not in ("histogram", "summary"):
            return "%s is read as a histogram's %s, but %s is a %s" % (name, suffix, family, types[family])
    return None


def check_syntax(exprs, fail):
    """Parses every expr with promtool, as recording rules (nothing needs to be running)."""
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as rules:
        group = {"name": "dashboard", "rules": [{"record": "dashboard:query_%d" % i, "expr": as_promql(e)}
                                                for i, (_, e) in enumerate(exprs)]}
        json.dump({"groups": [group]}, rules)  # JSON is YAML
        rules.flush()
        try:
            out = subprocess.run([promtool, "check", "rules", rules.name], capture_output=True, text=True)
        except OSError as e:
            fail("promtool did not run: %s" % e)
            return
        if out.returncode != 0:
            said = (out.stdout + out.stderr).strip()
            located = [(int(m.group(1)), m.group(2)) for m in re.finditer(r'"dashboard:query_(\d+)": (.*)', said)]
            for i, error in located:
                fail("%s does not parse: %s" % (exprs[i][0], error))
            if not located:
                fail("promtool check rules failed: %s" % said)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dashboard")
    parser.add_argument("metrics_url")
    parser.add_argument("--step", action="append",
                        help="a step whose qopt_step_duration_seconds_count must be above 0 (repeatable)")
    parser.add_argument("--wait", type=float, default=30)
    args = parser.parse_args()
    failures = []

    def fail(message):
        failures.append(message)
        print("FAIL " + message)

    with open(args.dashboard) as f:
        dashboard = json.load(f)
    exprs = queries(dashboard, fail)
    check_syntax(exprs, fail)
    wanted = {}  # metric name -> where it is read
    for where, expr in exprs:
        names = metric_names(expr)
        if not names:
            fail("%s reads no metric: %s" % (where, expr))
        for name in names:
            wanted.setdefault(name, where)

    deadline = time.time() + args.wait
    while True:
        samples, types = scrape(args.metrics_url)
        problems = {n: missing_from(n, samples, types) for n in sorted(wanted)}
        if not any(problems.values()) or time.time() > deadline:
            break
        time.sleep(0.5)
    for name, problem in problems.items():
        if problem:
            fail("%s (read by %s)" % (problem, wanted[name]))
        else:
            print("ok   %s" % name)
    unshown = sorted(f for f in types if f.startswith("qopt_") and
                     not any(n == f or n in (f + s for s in HISTOGRAM_SUFFIXES) for n in wanted))
    if unshown:
        print("note the dashboard shows no %s" % ", ".join(unshown))

    for step in args.step or []:
        count = samples.get("qopt_step_duration_seconds_count", {}).get('{step="%s"}' % step, 0)
        if count > 0:
            print('ok   qopt_step_duration_seconds_count{step="%s"} = %g' % (step, count))
        else:
            fail('qopt_step_duration_seconds_count{step="%s"} is %g, expected above 0' % (step, count))
    print("%d queries, %d metrics, %d failures" % (len(exprs), len(wanted), len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
