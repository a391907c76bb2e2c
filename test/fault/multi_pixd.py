#!/usr/bin/env python3
"""Several pixd in front of one database, no load balancer: the client picks a server at random for
every call of every collector.

    test/fault/multi_pixd.py [--short] [--servers N] [--json OUT.json]

Checks (each a test; "N passed, N failed" at the end):
  collector_limit   6 streams of one ISPB opened through different servers; a 7th start answers 429
                    on every server
  replay            a batch read through one server is replayed, with the same Pull-Next, by the
                    retry of the previous id through another; its Pull-Next confirms it through a third
  expiry_sweep      each server alone (the others SIGSTOPped) expires an abandoned stream and requeues
                    its batch by its own once-a-second sweep, without any read of that ISPB
  drain             the exactly-once drain of test/fault/faultlib.py (producers, 6 collectors on each of
                    several ISPBs, collectors killed at random) with every call on a random server
  wake              a collector parked on one server gets a message inserted by SQL: the time from the
                    INSERT's commit to the 200 is reported (not asserted) per pair of servers

The database: PIX_PG (a libpq conninfo of a cluster to use, e.g. make test's) or a private cluster
(PIX_FAULT_PGDIR, default /tmp/pixmp, port PIX_FAULT_PGPORT, default 5860). HTTP ports: free ones
picked by the kernel. Loopback only.
"""

import argparse
import http.client
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault("PIX_FAULT_PGDIR", "/tmp/pixmp")
os.environ.setdefault("PIX_FAULT_PGPORT", "5860")
sys.path.insert(0, HERE)
import faultlib as fl  # noqa: E402
from failover import make_psql  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SpreadCollector(fl.Collector):
    """faultlib's collector, every call to a server picked at random (a new connection each time)."""

    def _request(self, method, uri, timeout=20):
        port = random.choice(self.d.ports)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            c.request(method, uri, headers={"Accept": self.accept})
            r = c.getresponse()
            self.retry_after = r.getheader("Retry-After")
            return r.status, r.getheader("Pull-Next"), r.read()
        finally:
            c.close()

    def _raw_kill(self, uri, hold):
        saved = self.d.port
        self.d.port = random.choice(self.d.ports)
        try:
            super()._raw_kill(uri, hold)
        finally:
            self.d.port = saved


def get(port, path, accept="application/json", method="GET"):
    return fl.http_get(port, path, {"Accept": accept}, method=method)


class Suite:
    def __init__(self, servers, dbname):
        self.servers, self.dbname = servers, dbname
        self.ports = [s.port for s in servers]
        self.results = []

    def record(self, name, ok, detail):
        self.results.append({"name": name, "verdict": "PASS" if ok else "FAIL", "detail": detail})
        fl.log(f"{name}: {'PASS' if ok else 'FAIL'}: {detail}")

    def new_ispb(self):
        return "%08d" % random.randrange(10_000_000, 99_999_999)

    def collector_limit(self):
        ispb = self.new_ispb()
        answers = []

        def start(port):
            answers.append((port, get(port, f"/api/pix/{ispb}/stream/start")))
        threads = [threading.Thread(target=start, args=(self.ports[i % len(self.ports)],)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        opened = [h.get("pull-next") for _, (st, h, _) in answers if st in (200, 204)]
        sevenths = [get(p, f"/api/pix/{ispb}/stream/start")[0] for p in self.ports]
        for uri in opened:
            get(random.choice(self.ports), uri, method="DELETE")
        after = get(random.choice(self.ports), f"/api/pix/{ispb}/stream/start")
        if after[0] in (200, 204):
            get(random.choice(self.ports), after[1]["pull-next"], method="DELETE")
        ok = len(opened) == 6 and all(s == 429 for s in sevenths) and after[0] in (200, 204)
        self.record("collector_limit", ok, f"6 starts over {len(self.ports)} servers opened {len(opened)}; "
                    f"a 7th start on each server: {sevenths}; after closing them a start gets {after[0]}")

    def replay(self):
        ispb = self.new_ispb()
        fl.psql(f"SELECT pix_generate_messages('{ispb}', 3)", dbname=self.dbname)
        a, b, c = random.sample(self.ports, 3) if len(self.ports) >= 3 else (self.ports * 3)[:3]
        st1, h1, m1 = get(a, f"/api/pix/{ispb}/stream/start")
        id1 = h1.get("pull-next")
        st2, h2, m2 = get(b, id1)
        st3, h3, m3 = get(c, id1)
        st4, h4, m4 = get(a, h2.get("pull-next") or "/")
        e2e = [json.loads(m)["endToEndId"] if m else None for m in (m1, m2, m3, m4)]
        ok = ((st1, st2, st3, st4) == (200, 200, 200, 200) and m3 == m2 and h3.get("pull-next") == h2.get("pull-next")
              and len({e2e[0], e2e[1], e2e[3]}) == 3)
        get(b, h4.get("pull-next") or "/", method="DELETE")
        self.record("replay", ok, f"start on :{a} {st1}, next on :{b} {st2}, retry of the previous id on :{c} "
                    f"{st3} (same batch {m3 == m2}, same Pull-Next {h3.get('pull-next') == h2.get('pull-next')}), "
                    f"Pull-Next on :{a} {st4} with a third message {e2e[3] not in e2e[:2]}")

    def expiry_sweep(self):
        """The idle timeout is 2 s; each server in turn is the only one running."""
        details = []
        ok_all = True
        for i, srv in enumerate(self.servers):
            others = [s for s in self.servers if s is not srv]
            ispb = self.new_ispb()
            fl.psql(f"SELECT pix_generate_messages('{ispb}', 1)", dbname=self.dbname)
            st, h, _ = get(srv.port, f"/api/pix/{ispb}/stream/start")
            for o in others:
                o.proc.send_signal(signal.SIGSTOP)
            try:
                # Nobody reads this ISPB again: only a sweep can expire the stream and requeue it.
                deadline = time.monotonic() + 15
                requeued = False
                while time.monotonic() < deadline and not requeued:
                    time.sleep(0.5)
                    out = fl.psql(f"SELECT count(*) FROM pix.ready WHERE ispb = '{ispb}'", dbname=self.dbname)
                    requeued = int(out) == 1
            finally:
                for o in others:
                    o.proc.send_signal(signal.SIGCONT)
            ok = st == 200 and requeued
            ok_all &= ok
            details.append(f"server {i + 1} alone: batch {'requeued' if requeued else 'NOT requeued'} by its sweep")
        self.record("expiry_sweep", ok_all, "; ".join(details))

    def drain(self, seconds):
        d = fl.Drain("multi_pixd_drain", self.dbname, port=self.ports[0], n_ispbs=3, collectors_per_ispb=6,
                     kill_rate=0.03, http_producers=1, sql_producers=1, produce_period=0.15,
                     max_seconds=seconds + 120)
        d.ports = self.ports
        d.collectors = [SpreadCollector(d, c.ispb, c.idx, c.kill_rate) for c in d.collectors]
        d.start()
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            time.sleep(0.2)
        r = d.finish(drain_timeout=60)
        if r["out"] < 200:
            r["violations"].append(f"only {r['out']} messages: too few to mean anything")
        self.record("drain", not r["violations"],
                    f"{r['in']} in, {r['out']} confirmed, {r['lost']} lost, {r['dup_unexplained']} unexplained "
                    f"duplicates, {sum(r['kills'].values())} collector kills, statuses {r['status']}; "
                    f"violations {r['violations'][:5]}")
        return r

    def wake(self, samples):
        """Commit -> 200 for a collector parked on one server, message inserted with SQL."""
        lat = {}
        ok = True
        for k in range(samples):
            port = self.ports[k % len(self.ports)]
            ispb = self.new_ispb()
            st, h, _ = get(port, f"/api/pix/{ispb}/stream/start")  # empty: parks, then 204 with an id
            uri = h.get("pull-next")
            box = {}

            def read():
                box["r"] = get(port, uri)
                box["t"] = time.monotonic()
            t = threading.Thread(target=read)
            t.start()
            time.sleep(0.3)  # let it park
            fl.psql(f"SELECT pix_generate_messages('{ispb}', 1)", dbname=self.dbname)
            t_commit = time.monotonic()  # psql returned: the COMMIT was answered
            t.join(15)
            if box.get("r", (None,))[0] != 200:
                ok = False
            else:
                lat.setdefault(port, []).append(box["t"] - t_commit)
                get(port, box["r"][1].get("pull-next"), method="DELETE")
        allv = sorted(v for vs in lat.values() for v in vs)
        figure = {"samples": len(allv),
                  "median_ms": round(statistics.median(allv) * 1000, 1) if allv else None,
                  "max_ms": round(max(allv) * 1000, 1) if allv else None}
        self.record("wake", ok and len(allv) == samples,
                    f"{len(allv)}/{samples} parked reads woken with a 200 by an SQL INSERT; commit -> 200 "
                    f"(psql's return to the answer: includes psql's exit) median {figure['median_ms']} ms, "
                    f"max {figure['max_ms']} ms")
        return figure


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--short", action="store_true")
    ap.add_argument("--servers", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    own_cluster = "PIX_PG" not in os.environ
    if own_cluster:
        fl.cluster_stop()
        fl.cluster_start()
        base = fl.base()
    else:
        base = os.environ["PIX_PG"]
        fl.psql = make_psql(base)
    dbname = "multi_pixd"
    fl.psql(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
    fl.psql(f"CREATE DATABASE {dbname}")
    fl.psql("CREATE EXTENSION pix", dbname=dbname)
    fl.psql(f"ALTER DATABASE {dbname} SET pix.stream_idle_timeout = '2s'", dbname=dbname)
    servers = []
    figures = {}
    try:
        for i in range(args.servers):
            servers.append(fl.Pixd(f"{base} dbname={dbname}", port=free_port(), name=f"pixd-multi{i + 1}").start())
        s = Suite(servers, dbname)
        # The drain first: its end-to-end check covers every message in the database.
        r = s.drain(12 if args.short else 40)
        figures["drain"] = {k: r[k] for k in ("in", "out", "lost", "dup_unexplained", "seconds", "kills")}
        s.collector_limit()
        s.replay()
        s.expiry_sweep()
        figures["wake"] = s.wake(6 if args.short else 30)
        for i, srv in enumerate(servers):
            rc = srv.stop()
            if rc != 0:
                s.record(f"server{i + 1}_exit", False, f"pixd exited {rc} on SIGTERM (log {srv.log_path})")
    finally:
        for srv in servers:
            if srv.alive():
                srv.kill()
        if own_cluster:
            fl.cluster_stop()
    passed = sum(1 for r in s.results if r["verdict"] == "PASS")
    failed = len(s.results) - passed
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"servers": args.servers, "results": s.results, "figures": figures}, f, indent=1)
    print(json.dumps(figures))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
