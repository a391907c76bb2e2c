#!/usr/bin/env python3
"""Writes (to stdout) the "High availability" section of RELIABILITY.md from the JSON results of
test/fault/failover.py and test/fault/multi_pixd.py. test/fault/run.sh appends it after report.py's.

    test/fault/ha_report.py FAILOVER.json MULTI.json STARTED_UTC
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import sh  # noqa: E402


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def cell(v):
    return "—" if v is None else str(v).replace("|", "\\|").replace("\n", " ")


def main():
    failover, multi, started = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3]
    commit = sh("git", "rev-parse", "--short", "HEAD")
    dirty = "with uncommitted changes" if sh("git", "status", "--porcelain") else "clean"
    out = []
    p = out.append
    p("")
    p("## High availability: failover and several pixd (test/fault/failover.py, test/fault/multi_pixd.py)")
    p("")
    p(f"Run {started} (UTC), commit `{commit}` ({dirty}), by `make test-fault`. The formation is")
    p("`scripts/ha.sh` (pg_auto_failover 2.0: monitor, primary, synchronous standby on loopback); pixd")
    p("runs on the multi-host conninfo with `--durable-reads`. Each scenario is a drain of 3 ISPBs x 6")
    p("collectors with an HTTP producer and an SQL producer whose acknowledged COMMITs are followed one")
    p("by one; the fault comes 8 s in. The outage is what collectors saw: from the first 503 after the")
    p("fault to the first 200 after the last 503; the longest gap is the longest time without any 200")
    p("to any collector from the last 200 before the fault (it also counts requests that waited")
    p("instead of failing).")
    p("")
    if failover:
        settings = next((r.get("ha_settings") for r in failover if r.get("ha_settings")), [])
        p("| scenario | verdict | acknowledged inserts | messages in / confirmed / lost | unexplained duplicates | "
          "new primary after | outage (first 503 → first 200 after the last 503) | longest gap without a 200 | "
          "503s | stream across the failover | events |")
        p("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in failover:
            if r.get("verdict") == "SKIP":
                p(f"| {r['name']} | SKIP | | | | | | | | | {cell(r.get('skipped'))} |")
                continue
            if "in" not in r:  # no drain: a check of answers only
                p(f"| {r['name']} | **{r['verdict']}** | | | | | | | | | "
                  f"{cell('; '.join(r.get('events', [])))}; answers {cell(r.get('status'))} |")
                continue
            p(f"| {r['name']} | **{r['verdict']}** | {cell(r.get('acked_inserts'))} (not received: "
              f"{cell(r.get('acked_not_received'))}) | {cell(r.get('in'))} / {cell(r.get('out'))} / "
              f"{cell(r.get('lost'))} | {cell(r.get('dup_unexplained'))} | "
              f"{cell(r.get('switch_after_fault_s'))} s | **{cell(r.get('outage_s'))} s** | "
              f"{cell(r.get('longest_gap_between_200s_s'))} s | {cell(r.get('reads_503'))} | {cell(r.get('stream_checks'))} checks | "
              f"{cell('; '.join(r.get('events', [])))} |")
        bad = [(r["name"], v) for r in failover for v in r.get("violations", [])]
        if bad:
            p("")
            p("Violations:")
            for name, v in bad[:20]:
                p(f"- {name}: {cell(v)}")
        p("")
        p("pg_auto_failover settings of this run (`scripts/ha.sh settings`):")
        p("")
        for s in settings:
            p(f"- `{s}`")
    else:
        p("(no failover results in this run)")
    p("")
    if multi:
        p(f"Several pixd on one database ({multi['servers']} servers, every call of every collector to one "
          "picked at random, no load balancer):")
        p("")
        p("| check | verdict | what was seen |")
        p("|---|---|---|")
        for r in multi["results"]:
            p(f"| {r['name']} | **{r['verdict']}** | {cell(r['detail'])} |")
        w = multi.get("figures", {}).get("wake")
        if w:
            p("")
            p(f"Wake latency across servers (commit of an SQL INSERT → 200 to a collector parked on one of "
              f"the servers, {w['samples']} samples; measured from psql's return, reported, not asserted): "
              f"median {w['median_ms']} ms, max {w['max_ms']} ms.")
    print("\n".join(out))


if __name__ == "__main__":
    main()
