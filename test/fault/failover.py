#!/usr/bin/env python3
"""Failover without loss: a pg_auto_failover formation (scripts/ha.sh: monitor, primary, synchronous
standby), pixd on the multi-host conninfo, an exactly-once drain, and the primary lost mid-drain.

    test/fault/failover.py [--short] [--only NAME ...] [--json OUT.json] [--dir DIR] [--port PORT]

Scenarios (one formation for all, in this order; each its own database and drain):
  standby_only      pixd on the standby alone: every call is refused as read-only (25006) and must
                    answer 503 + Retry-After, never 500 or 404 (no drain)
  postmaster_kill   SIGKILL of the primary's postmaster (its keeper stays: the monitor may fail over,
                    or the keeper may restart PostgreSQL first; either way the drain must finish)
  node_kill         SIGKILL of the primary's whole node (pg_autoctl, keeper, PostgreSQL: a machine
                    lost); the monitor fails over after its health checks; the node is started
                    again afterwards and rejoins as the standby
  sync_cut          the standby stops acknowledging (the primary's walsender is SIGSTOPped: the
                    monitor still sees a healthy synchronous standby, and every COMMIT waits);
                    the backends waiting for it are terminated, as the fast shutdown of a
                    demotion does (PostgreSQL then warns "canceling the wait for synchronous
                    replication": committed on the primary only); then the primary's whole node
                    is lost and the standby, which never got those commits, is promoted. A call
                    answered for such a commit (a 201 for a send) is an acknowledged loss
  partition         (not in --short) the primary and the standby cannot reach each other for 15 s
                    (a formation of its own in network namespaces made by test/fault/netns.py, on
                    PORT+3..PORT+5); skipped with a message when namespaces cannot be made here
--short (make test): standby_only, postmaster_kill, node_kill and sync_cut, with shorter drains.

Verdict of each scenario (on top of test/fault/faultlib.py's checks: nothing lost in the database,
no message in two open streams, no duplicate without a requeue, nothing confirmed that no collector
received, no 5xx other than 503):
  - every message whose INSERT was acknowledged (COMMIT answered) was received by a collector and is
    confirmed in the database of the new primary;
  - the formation really switched (for node_kill: the other node is primary at the end).
Figures: the outage seen by collectors, from the first 503 after the fault to the first 200 after the
last 503, and the longest time without any 200 to any collector around the fault.

Ports: PORT (default 5850, PIX_HA_PORT; 0 = three free ones) for the monitor, PORT+1 and PORT+2 for
the nodes, and PIX_FAULT_HTTP_PORT (3850) for pixd. Loopback only. Ends with "N passed, N failed, N skipped"
(a SKIP scenario, e.g. partition without network namespaces, is counted as skipped, never as passed).
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
os.environ.setdefault("PIX_FAULT_HTTP_PORT", "3850")
sys.path.insert(0, HERE)
import faultlib as fl  # noqa: E402
from faults import close  # noqa: E402

HA_SH = os.path.join(ROOT, "scripts", "ha.sh")
# Longer than the outage, so that a stream survives the failover (the contract's idle timeout is
# 60 s; a shorter one keeps the drain's end quick).
IDLE_TIMEOUT = "30s"


def log(*a):
    fl.log(*a)


class Formation:
    """The formation scripts/ha.sh runs: nodes 1 and 2 on PORT+1, PORT+2, the monitor on PORT."""

    def __init__(self, directory, port):
        self.dir, self.port = directory, port
        self.conninfo = None

    def ha(self, *args, timeout=300, check=True):
        out = subprocess.run([HA_SH, args[0], self.dir, *args[1:]], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise RuntimeError(f"ha.sh {' '.join(args)} failed: {out.stderr.strip()[-800:]}")
        return out.stdout

    def start(self):
        t = time.monotonic()
        self.conninfo = self.ha("start", str(self.port)).strip().splitlines()[-1]
        log(f"formation up in {time.monotonic() - t:.0f} s: {self.conninfo}")
        return self.conninfo

    def stop(self):
        self.ha("stop", check=False, timeout=120)

    def settings(self):
        return [line for line in self.ha("settings", check=False).splitlines() if line.strip()]

    def monitor_sql(self, sql, timeout=5):
        out = subprocess.run([fl.PSQL, "-X", "-q", "-A", "-t", "-F", "|",
                              f"host=127.0.0.1 port={self.port} dbname=pg_auto_failover user=postgres "
                              "connect_timeout=2", "-c", sql],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
        return out.stdout if out.returncode == 0 else None

    def nodes(self):
        """{node number: (reported state, goal state)} as the monitor sees them."""
        out = self.monitor_sql("SELECT nodename, reportedstate, goalstate FROM pgautofailover.node")
        res = {}
        for line in (out or "").splitlines():
            name, rep, goal = line.split("|")
            res[int(name.removeprefix("node"))] = (rep, goal)
        return res

    def primary(self):
        for n, (rep, goal) in self.nodes().items():
            if rep in ("primary", "wait_primary", "single") and rep == goal:
                return n
        return None

    def wait_primary_other_than(self, old, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = self.primary()
            if p is not None and p != old:
                return p
            time.sleep(0.1)
        return None

    def wait_ready(self, timeout=240):
        self.ha("wait", timeout=timeout + 10)

    def postmaster_pid(self, n):
        with open(os.path.join(self.dir, f"node{n}", "postmaster.pid")) as f:
            return int(f.readline())

    def kill_postmaster(self, n):
        os.kill(self.postmaster_pid(n), signal.SIGKILL)

    def kill_node(self, n):
        """SIGKILL of the node's process group: pg_autoctl, its keeper and PostgreSQL (ha.sh runs
        each node in a session of its own, so the postmaster's group is the node)."""
        pgid = os.getpgid(self.postmaster_pid(n))
        if pgid == os.getpgrp():
            raise RuntimeError("the node shares our process group: refusing to kill it")
        os.killpg(pgid, signal.SIGKILL)

    def run_node(self, n):
        self.ha("run-node", str(n))


def make_psql(conninfo, default_db="postgres"):
    """faultlib's psql, pointed at whichever node is primary (libpq's target_session_attrs), or at
    the node a `conninfo` argument names."""
    def psql(sql, dbname=None, user="postgres", check=True, timeout=60, conninfo=conninfo, **_):
        out = subprocess.run([fl.PSQL, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                              f"{conninfo} dbname={dbname or default_db} user={user}", "-c", sql],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr.strip()}\nSQL: {sql[:300]}")
        return out.stdout if out.returncode == 0 else None
    return psql


class AckedProducer(threading.Thread):
    """Inserts messages with SQL, with endToEndIds it chose itself, and records those of every
    transaction whose COMMIT was answered: those are the acknowledged messages the verdict follows
    (RETURNING must give back exactly them). A COMMIT that got no answer (connection lost) is unknown,
    neither counted nor required."""

    def __init__(self, drain, conninfo, period):
        super().__init__(daemon=True)
        self.d, self.conninfo, self.period = drain, conninfo, period
        self.acked = set()
        self.unknown = 0

    def run(self):
        rng = random.Random()
        deadline = time.monotonic() + self.d.max_seconds
        while not self.d.stop_producers.is_set() and time.monotonic() < deadline:
            ispb = rng.choice(self.d.ispbs)
            n = rng.randint(1, 10)
            ids = fl.client_ids(fl.SQL_PAYER, rng, n)
            # One statement, one transaction (psql -c autocommits): answered means committed.
            try:
                out = subprocess.run(
                    [fl.PSQL, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                     f"{self.conninfo} dbname={self.d.dbname} user=postgres",
                     "-c", fl.acked_insert_sql(ispb, ids)],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=20)
            except subprocess.TimeoutExpired:
                self.unknown += 1
                continue
            if out.returncode == 0:
                if sorted(out.stdout.split()) != sorted(ids):
                    self.d.stats.violation(f"producer: inserted {n} ids, RETURNING gave {out.stdout.split()[:3]}")
                with self.d.stats.lock:
                    self.acked.update(ids)
                    self.d.stats.produced_calls += 1
            else:
                self.unknown += 1
                time.sleep(0.2)
            time.sleep(self.period)


class TimedStats(fl.Stats):
    """faultlib's Stats, with the time of every read status (for the outage figure)."""

    def __init__(self):
        super().__init__()
        self.timeline = []  # (monotonic time, status)

    def count(self, status):
        super().count(status)
        if isinstance(status, int):
            with self.lock:
                self.timeline.append((time.monotonic(), status))


def get_until_answered(port, path, accept="application/json", method="GET", timeout=90):
    """The request again after each 503 or broken connection (what a collector does), until it gets
    another answer. Returns (status, Pull-Next, body, number of 503s seen)."""
    deadline = time.monotonic() + timeout
    n503 = 0
    while time.monotonic() < deadline:
        try:
            status, headers, body = fl.http_get(port, path, {"Accept": accept}, method=method)
        except OSError:
            time.sleep(0.2)
            continue
        if status != 503:
            return status, headers.get("pull-next"), body, n503
        if not headers.get("retry-after"):
            return status, None, b"503 without Retry-After", n503
        n503 += 1
        time.sleep(0.2)
    return None, None, b"no answer", n503


class StreamProbe:
    """A collector's stream across the failover, on an ISPB of its own: before the fault it reads
    batch A (start), then batch B (Pull-Next id1 -> Pull-Next id2) and holds B pending, and 5 more
    streams fill the 6 slots. After the fault, the retry of the previous id (id1) must replay B with
    the same Pull-Next, a 7th start must get 429, and id2 must confirm B and read on."""

    def __init__(self, port, dbname, stats):
        self.port, self.dbname, self.stats = port, dbname, stats
        self.ispb = "%08d" % random.randrange(10_000_000, 99_999_999)
        self.checks = []

    def get(self, path, method="GET"):
        """One call, retried through 503s; what a 200 carried counts as received (once: the replay of
        a batch to the same stream is not a second delivery) for the drain's end-to-end check."""
        st, pull_next, body, n503 = get_until_answered(self.port, path, method=method)
        if st == 200 and method == "GET":
            with self.stats.lock:
                for e2e in [json.loads(body)["endToEndId"]]:
                    self.stats.receipts.setdefault(e2e, 1)
        return st, pull_next, body, n503

    def check(self, ok, what):
        self.checks.append((bool(ok), what))

    def before(self):
        fl.psql(f"SELECT pix_generate_messages('{self.ispb}', 4)", dbname=self.dbname)
        st, self.id1, a, _ = self.get(f"/api/pix/{self.ispb}/stream/start")
        self.check(st == 200 and self.id1, f"start: 200 with Pull-Next (got {st})")
        st, self.id2, self.batch_b, _ = self.get(self.id1)
        self.check(st == 200 and self.id2 and self.id2 != self.id1, f"id1: 200 with a new Pull-Next (got {st})")
        self.others = []
        threads = [threading.Thread(target=self._open_empty) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.check(len(self.others) == 5, f"5 more streams opened (got {len(self.others)})")

    def _open_empty(self):
        # The 2 messages left go to whichever of these starts first: any answer with a Pull-Next opens.
        st, pull_next, _, _ = self.get(f"/api/pix/{self.ispb}/stream/start")
        if st in (200, 204) and pull_next:
            self.others.append(pull_next)

    def after(self):
        st, pull_next, body, n503 = self.get(self.id1)
        replayed = st == 200 and body == self.batch_b and pull_next == self.id2
        self.check(replayed,
                   f"retry of the previous id after the failover replays batch B with the same Pull-Next "
                   f"(got {st}, same body {body == self.batch_b}, same Pull-Next {pull_next == self.id2}, "
                   f"after {n503} answers 503)" + ("" if replayed else f"; {self.stream_state()}"))
        st, _, _, _ = self.get(f"/api/pix/{self.ispb}/stream/start")
        self.check(st == 429, f"a 7th start after the failover gets 429 (got {st})")
        st, _, _, _ = self.get(self.id2)
        self.check(st in (200, 204), f"Pull-Next id2 confirms B and reads on (got {st})")
        for uri in [self.id2] + self.others:
            self.get(uri, method="DELETE")

    def result(self):
        return [what for ok, what in self.checks if not ok], len(self.checks)

    def stream_state(self):
        """What the database holds for the probe's stream, at once (to tell a wrong answer of pixd's
        from a wrong state of the database's when the replay check fails)."""
        iid2 = self.id2.rsplit("/", 1)[-1]
        out = fl.psql("SELECT format('stream %s state %s seq %s current %s pending %s, last read %s ago', "
                      "stream_id, state, seq, current_iid = " + f"'{iid2}'" + ", cardinality(pending_ids), "
                      "clock_timestamp() - last_read_at) FROM pix.stream WHERE ispb = " + f"'{self.ispb}' "
                      "AND current_iid = " + f"'{iid2}'", dbname=self.dbname, check=False)
        return "database: " + ((out or "").strip() or "no open stream at id2 (or no answer)")


def outage(stats, t_fault, window=30):
    """The outage collectors saw: from the first 503 after the fault to the first 200 after the
    last 503 of the window (a 200 may slip between 503s while the old primary is still answering;
    the outage ends when the collectors stop meeting 503s). Returns (start, end, 503 count)."""
    events = sorted(e for e in stats.timeline if t_fault <= e[0] <= t_fault + window)
    n503 = [t for t, s in events if s == 503]
    if not n503:
        return None, None, 0
    first_200 = next((t for t, s in sorted(stats.timeline) if s == 200 and t > n503[-1]), None)
    return n503[0], first_200, len(n503)


def longest_gap_200(stats, t_fault, t_until):
    """The longest time without any 200 to any collector, from the last 200 before the fault until
    t_until: a stall seen even when nothing answered 503 (requests that waited instead)."""
    times = sorted(t for t, s in stats.timeline if s == 200 and t <= t_until)
    before = [t for t in times if t < t_fault]
    after = [t for t in times if t >= t_fault]
    points = before[-1:] + after
    gaps = [b - a for a, b in zip(points, points[1:])]
    return round(max(gaps), 2) if gaps else None


def run_scenario(name, formation, seconds, fault, pixd_extra=()):
    dbname = f"ha_{name}"
    psql = fl.psql
    psql(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
    psql(f"CREATE DATABASE {dbname}")
    # libpq tries the nodes in order and does not go on after a FATAL at start-up: until the
    # standby has replayed CREATE DATABASE, a connection that tries it first is refused.
    for attempt in range(100):
        if psql("CREATE EXTENSION pix", dbname=dbname, check=attempt == 99) is not None:
            break
        time.sleep(0.2)
    psql(f"ALTER DATABASE {dbname} SET pix.stream_idle_timeout = '{IDLE_TIMEOUT}'")
    pixd = fl.Pixd(f"{formation.conninfo} dbname={dbname} user=postgres",
                   extra=["--durable-reads", *pixd_extra], name=f"pixd-{name}").start()
    # gone_fails: the outage is shorter than IDLE_TIMEOUT, so every stream must survive the failover: a
    # 410 (a stream lost, e.g. a read path that does not survive the restart) fails the scenario.
    d = fl.Drain(name, dbname, port=pixd.port, n_ispbs=3, collectors_per_ispb=6, http_producers=1,
                 sql_producers=0, produce_period=0.2, max_seconds=seconds + 240, gone_fails=True,
                 idle_timeout=IDLE_TIMEOUT)
    d.stats = TimedStats()
    probe = StreamProbe(pixd.port, dbname, d.stats)
    probe.before()
    producer = AckedProducer(d, formation.conninfo, 0.1)
    d.producers.append(producer)
    events = []
    info = {}
    d.start()
    t_end = time.monotonic() + seconds
    fault(d, pixd, events, info)
    probe.after()
    while time.monotonic() < t_end:
        time.sleep(0.2)
    r = d.finish(drain_timeout=90)
    r["events"] = events
    r.update(info)
    failed_checks, n_checks = probe.result()
    r["stream_checks"] = f"{n_checks - len(failed_checks)}/{n_checks}"
    r["violations"] += [f"stream across the failover: {c}" for c in failed_checks]
    # The verdict on acknowledged inserts.
    acked = producer.acked
    received = set(d.stats.receipts)
    out = psql("SELECT DISTINCT msg.end_to_end_id FROM pix.iteration i, unnest(i.message_ids) m(id) "
               "JOIN pix.message msg ON msg.id = m.id WHERE i.confirmed_at IS NOT NULL", dbname=dbname)
    confirmed = set(out.split())
    not_received = acked - received
    not_confirmed = acked - confirmed
    r["acked_inserts"] = len(acked)
    r["unknown_inserts"] = producer.unknown
    r["acked_not_received"] = len(not_received)
    r["acked_not_confirmed"] = len(not_confirmed)
    if not_received:
        r["violations"].append(f"{len(not_received)} acknowledged messages never received, e.g. "
                               f"{sorted(not_received)[:3]}")
    if not_confirmed:
        r["violations"].append(f"{len(not_confirmed)} acknowledged messages not confirmed, e.g. "
                               f"{sorted(not_confirmed)[:3]}")
    if len(acked) < 50:
        r["violations"].append(f"only {len(acked)} acknowledged inserts: too few to mean anything")
    if "t_fault" in r:
        t_fault = r.pop("t_fault")
        r["longest_gap_between_200s_s"] = longest_gap_200(d.stats, t_fault, t_fault + 30)
        first_503, first_200, n503 = outage(d.stats, t_fault)
        r["reads_503"] = n503
        r["outage_s"] = round(first_200 - first_503, 2) if first_503 and first_200 else None
        r["first_503_after_fault_s"] = round(first_503 - t_fault, 2) if first_503 else None
        gap = r["longest_gap_between_200s_s"]
        if gap is not None and gap >= fl.idle_seconds(IDLE_TIMEOUT):
            r["violations"].append(f"no 200 for {gap} s, not less than the idle timeout ({IDLE_TIMEOUT}): the "
                                   "scenario cannot show that streams survive a failover")
        if "t_switch" in r:
            r["switch_after_fault_s"] = round(r.pop("t_switch") - t_fault, 2)
    r["primary_at_end"] = formation.primary()
    return close(r, pixd)


def kill_and_switch(formation, how, at):
    def fault(d, pixd, events, info):
        while time.monotonic() < d.t0 + at:
            time.sleep(0.05)
        old = formation.primary()
        if old is None:
            d.stats.violation("no primary before the fault")
            return
        info["t_fault"] = time.monotonic()
        if how == "postmaster":
            formation.kill_postmaster(old)
            events.append(f"t={at}s SIGKILL of node{old}'s postmaster")
        else:
            formation.kill_node(old)
            events.append(f"t={at}s SIGKILL of node{old} (pg_autoctl, keeper, PostgreSQL)")
        new = formation.wait_primary_other_than(old, 60)
        if new is not None:
            info["t_switch"] = time.monotonic()
            events.append(f"node{new} primary {time.monotonic() - info['t_fault']:.1f} s after the fault")
        elif how == "node":
            d.stats.violation("the monitor did not promote the standby within 60 s")
        else:
            events.append("no switch within 60 s (the keeper restarted PostgreSQL in place)")
        if how == "node":
            formation.run_node(old)
            events.append(f"node{old} started again (rejoins as standby)")
        info["old_primary"], info["new_primary"] = old, new
    return fault


def node_sql(formation, n, sql, timeout=10):
    """One statement on node n itself (not whichever is primary); its output, None on failure."""
    out = subprocess.run([fl.PSQL, "-X", "-q", "-A", "-t",
                          f"host=127.0.0.1 port={formation.port + n} dbname=postgres user=postgres "
                          "connect_timeout=2", "-c", sql],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    return out.stdout if out.returncode == 0 else None


def cut_sync_wait(formation, at, stall=2.5):
    """The fault of scenario sync_cut (see the module's docstring)."""
    def fault(d, pixd, events, info):
        while time.monotonic() < d.t0 + at:
            time.sleep(0.05)
        old = formation.primary()
        if old is None:
            d.stats.violation("no primary before the fault")
            return
        walsenders = [int(p) for p in (node_sql(formation, old, "SELECT pid FROM pg_stat_replication") or "").split()]
        if not walsenders:
            d.stats.violation(f"node{old} has no walsender to stop")
            return
        for pid in walsenders:
            os.kill(pid, signal.SIGSTOP)
        events.append(f"t={at}s walsender(s) {walsenders} of node{old} stopped: commits wait for the standby")
        time.sleep(stall)
        # NOTIFY's lock is held until the end of a transaction, its wait for the standby included:
        # the sends and INSERTs (they notify) wait for it one at a time, so cut in rounds until a
        # send was among those cut (each round lets the next one reach the wait).
        cut = sends_cut = rounds = 0
        while rounds < 12 and not sends_cut:
            rounds += 1
            out = node_sql(formation, old, "SELECT count(*), count(*) FILTER (WHERE query LIKE '%pix_messages_send%') "
                                           "FROM (SELECT query, pg_terminate_backend(pid) FROM pg_stat_activity "
                                           "WHERE wait_event = 'SyncRep') t")
            if out and "|" in out:
                n, s = (int(x) for x in out.strip().split("|"))
                cut, sends_cut = cut + n, sends_cut + s
            time.sleep(0.4)
        events.append(f"{cut} backends waiting for the standby terminated in {rounds} rounds (as a fast "
                      f"shutdown does), {sends_cut} of them sends")
        info["sync_waits_cut"], info["sends_cut"] = cut, sends_cut
        if not sends_cut:
            d.stats.violation("no send waited for the standby when the waits were cut: the scenario shows nothing")
        time.sleep(0.5)
        info["t_fault"] = time.monotonic()
        formation.kill_node(old)
        # PostgreSQL's children have process groups of their own: the stopped walsender is not in
        # the node's, and would never notice its postmaster's death. Killed while stopped, it sends
        # nothing more (and frees the shared memory the node's restart needs).
        for pid in walsenders:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        events.append(f"node{old} SIGKILLed (pg_autoctl, keeper, PostgreSQL)")
        new = formation.wait_primary_other_than(old, 60)
        if new is None:
            d.stats.violation("the monitor did not promote the standby within 60 s")
        else:
            info["t_switch"] = time.monotonic()
            events.append(f"node{new} primary {time.monotonic() - info['t_fault']:.1f} s after the kill")
        formation.run_node(old)
        events.append(f"node{old} started again (rejoins as standby)")
        info["old_primary"], info["new_primary"] = old, new
    return fault


def scenario_sync_cut(formation, short):
    # A pool larger than the collectors: every call waiting for the standby is in a backend (none
    # queued in pixd), the send among them, so the cut reaches it.
    return run_scenario("sync_cut", formation, 30 if short else 45, cut_sync_wait(formation, 8),
                        pixd_extra=["--pool", "32"])


def scenario_postmaster_kill(formation, short):
    return run_scenario("postmaster_kill", formation, 20 if short else 35,
                        kill_and_switch(formation, "postmaster", 8))


def scenario_node_kill(formation, short):
    return run_scenario("node_kill", formation, 30 if short else 45, kill_and_switch(formation, "node", 8))


def scenario_partition(formation, short):
    """A formation of its own, in network namespaces (test/fault/netns.py), on PORT+3..PORT+5."""
    import netns
    return netns.partition_scenario(Formation, formation.dir + "-netns", formation.port + 3, run_scenario,
                                    make_psql, fl)


def scenario_standby_only(formation, short):
    """pixd pointed at the standby alone (no target_session_attrs): its calls are refused as read-only
    (SQLSTATE 25006); every read and every POST must answer 503 + Retry-After, never 500 or 404."""
    standby = next((n for n, (rep, _) in formation.nodes().items() if rep == "secondary"), None)
    r = {"name": "standby_only", "violations": []}
    if standby is None:
        r["violations"].append("no secondary to point pixd at")
        r["verdict"] = "FAIL"
        return r
    dbname = "pix"
    conninfo = formation.conninfo.replace("target_session_attrs=read-write", "")
    host = conninfo.split("host=")[1].split()[0].split(",")[standby - 1]
    port = formation.port + standby
    pixd = fl.Pixd(f"host={host} port={port} dbname={dbname} user=postgres", extra=["--durable-reads"],
                   name="pixd-standby_only").start()
    seen = {}
    for path, method in [("/api/pix/12345678/stream/start", "GET"), ("/api/util/msgs/12345678/3", "POST"),
                         ("/api/pix/12345678/stream/abcdefghijkmnpqrstvw", "GET"),
                         ("/api/pix/12345678/stream/abcdefghijkmnpqrstvw", "DELETE")] * 3:
        try:
            status, headers, _ = fl.http_get(pixd.port, path, method=method)
        except OSError as e:
            r["violations"].append(f"{method} {path}: {e}")
            continue
        key = f"{method} {path.split('/')[-1] if 'stream' in path else 'msgs'} {status}"
        seen[key] = seen.get(key, 0) + 1
        if status != 503 or not headers.get("retry-after"):
            r["violations"].append(f"{method} {path} on the standby answered {status} "
                                   f"(Retry-After {headers.get('retry-after')})")
    r["status"] = seen
    r["events"] = [f"pixd on node{standby} (the standby) only"]
    return close(r, pixd)


SCENARIOS = {"standby_only": scenario_standby_only, "postmaster_kill": scenario_postmaster_kill, "node_kill": scenario_node_kill,
             "sync_cut": scenario_sync_cut, "partition": scenario_partition}


def free_port_run(n=3, lo=20000, hi=60000):
    """A port P with P..P+n-1 all free on loopback (make test runs beside other clusters)."""
    import socket
    for _ in range(200):
        p = random.randrange(lo, hi - n)
        socks = []
        try:
            for k in range(n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p + k))
            return p
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no run of free ports")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--short", action="store_true")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--json")
    ap.add_argument("--dir", default=os.environ.get("PIX_HA_DIR", "/tmp/pixha-fault"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("PIX_HA_PORT", "5850")))
    ap.add_argument("--keep", action="store_true", help="leave the formation running")
    args = ap.parse_args()
    if args.port == 0:
        args.port = free_port_run()
    names = args.only or (["standby_only", "postmaster_kill", "node_kill", "sync_cut"] if args.short
                          else list(SCENARIOS))
    formation = Formation(args.dir, args.port)
    results = []
    passed = failed = skipped = 0
    try:
        formation.stop()
        subprocess.run(["rm", "-rf", args.dir], check=True)
        conninfo = formation.start()
        fl.psql = make_psql(conninfo)  # faultlib's drain and checks follow the primary
        settings = formation.settings()
        for line in settings:
            log("setting:", line)
        for name in names:
            formation.wait_ready()
            log(f"--- {name}")
            try:
                r = SCENARIOS[name](formation, args.short)
            except Exception as e:  # a scenario that cannot run is a failure, not a crash of the suite
                r = {"name": name, "verdict": "FAIL", "violations": [f"{type(e).__name__}: {e}"]}
            r["ha_settings"] = settings
            results.append(r)
            print(json.dumps(r, sort_keys=True), flush=True)
            if r["verdict"] == "PASS":
                passed += 1
            elif r["verdict"] == "FAIL":
                failed += 1
                log(f"{name}: FAIL: {r['violations'][:5]}")
            elif r["verdict"] == "SKIP":
                skipped += 1  # shown in the final line: a scenario that did not run proves nothing
                log(f"{name}: SKIP: {r.get('skipped')}")
            else:
                failed += 1
                log(f"{name}: unknown verdict {r['verdict']!r}: counted as failed")
    finally:
        if not args.keep:
            formation.stop()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, sort_keys=True)
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
