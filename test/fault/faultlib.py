"""Shared machinery of the fault-injection suite (test/fault/): a private PostgreSQL cluster, the shim,
an exactly-once drain (collectors following Pull-Next, producers inserting), and the invariant check.

Standard library only. Loopback only. Every loop is bounded in count and time.

Vocabulary: a *drain* is N ISPBs x 6 collectors reading with Pull-Next while producers insert; a
*receipt* is one endToEndId seen by a collector in a 200, recorded by the client with the stream that
held it (a collector's stream from its start to the point it drops the stream), the interation id
(Pull-Next) and the client's own clock; a *duplicate* is an endToEndId received more than once under
different interation ids (the same id again is a replay of the same delivery, by contract).
Duplicates are judged from the client's records only, never from the database's pix.iteration (the
code under test writes it): between two consecutive receipts A then B of a message on different
streams, the stream of A must not have confirmed it (no 200/204 answer to the Pull-Next of A's batch),
and B must come at least the idle timeout after the last request on A's stream that got a 200/204
(a stream expires, and its batch is requeued, no earlier than the idle timeout after its last read:
the contract's "redelivered after expiry"). Anything else is a violation.
The client also records every 410 (time, stream); a drain made with gone_fails=True (failover: the
outage is shorter than the idle timeout, streams must survive) counts each one as a violation. Every
503 must carry Retry-After.
An *acknowledgement* is a producer's proof of commit, in the client's own endToEndIds: the ids it
chose for an INSERT whose COMMIT was answered (SQL producer; RETURNING must give them back), or for a
POST /api/pix/{payer}/msgs answered 201 (HTTP producer). Every acknowledged id must be in the database
at the end and received or still queued.

PIX_FAULT_SABOTAGE (for proving the checks can fail; never in a real run): lose_acked deletes one
message of an INSERT in the INSERT's own transaction, after RETURNING gave its id (acknowledged, never there); undrained stops the collectors without
draining. Each must turn the verdict to FAIL.
"""

import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PGBIN = os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")
PSQL = next((p for p in (os.path.join(PGBIN, "psql"), "/usr/lib/postgresql/15/bin/psql", "/usr/bin/psql")
             if os.path.exists(p)), "psql")
PIXD = os.environ.get("PIX_PIXD", os.path.join(ROOT, "shim", "pixd"))
PGDIR = os.environ.get("PIX_FAULT_PGDIR", "/tmp/pgF1")
PGPORT = int(os.environ.get("PIX_FAULT_PGPORT", "5495"))
HTTP_PORT = int(os.environ.get("PIX_FAULT_HTTP_PORT", "3495"))
LOGDIR = os.environ.get("PIX_FAULT_LOGDIR", "/tmp/pgF-logs")
SABOTAGE = os.environ.get("PIX_FAULT_SABOTAGE", "")
SQL_PAYER = "99955555"  # payer ISPB of the SQL producer's messages; the generator never uses it
HTTP_PAYER = "99944444"  # payer ISPB of the HTTP producer's sends (POST /api/pix/99944444/msgs)
IDLE_TIMEOUT = "2s"
WAIT_MS = 1000
os.makedirs(LOGDIR, exist_ok=True)


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def cluster_start(pgdir=PGDIR, port=PGPORT):
    out = subprocess.run([os.path.join(ROOT, "scripts", "cluster.sh"), "start", pgdir, str(port)],
                         check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    return out.stdout.strip().splitlines()[-1]


def cluster_stop(pgdir=PGDIR):
    subprocess.run([os.path.join(ROOT, "scripts", "cluster.sh"), "stop", pgdir],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


def base(pgdir=PGDIR, port=PGPORT, user="postgres"):
    return f"host={pgdir} port={port} user={user}"


def psql(sql, dbname="postgres", user="postgres", check=True, timeout=60, pgdir=PGDIR, port=PGPORT):
    out = subprocess.run([PSQL, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                          f"{base(pgdir, port, user)} dbname={dbname} connect_timeout=3", "-c", sql],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise RuntimeError(f"psql failed: {out.stderr.strip()}\nSQL: {sql[:300]}")
    return out.stdout if out.returncode == 0 else None


def create_database(name, idle_timeout=IDLE_TIMEOUT):
    assert re.fullmatch(r"[a-z_][a-z0-9_]*", name)
    psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    psql(f"CREATE DATABASE {name}")
    psql("CREATE EXTENSION pix", dbname=name)
    psql(f"ALTER DATABASE {name} SET pix.stream_idle_timeout = '{idle_timeout}'")
    return f"{base()} dbname={name}"


def pg_ctl(*args, timeout=90):
    return subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(PGBIN, "pg_ctl"), "-D",
                           os.path.join(PGDIR, "data"), "-l", os.path.join(PGDIR, "postgres.log"), *args],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)


def postmaster_pid():
    with open(os.path.join(PGDIR, "data", "postmaster.pid")) as f:
        return int(f.readline())


def postgres_pids():
    """The postmaster and its children (backends, auxiliary processes), by pid."""
    pm = postmaster_pid()
    pids = [pm]
    try:
        with open(f"/proc/{pm}/task/{pm}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return pids


# ---------------------------------------------------------------------------------------------
# The shim


class Pixd:
    def __init__(self, db, port=HTTP_PORT, extra=(), nofile=None, name="pixd"):
        self.db, self.port, self.extra, self.nofile, self.name = db, port, list(extra), nofile, name
        self.proc = None
        self.log_path = os.path.join(LOGDIR, f"{name}-{port}.log")
        self.starts = 0

    def start(self, timeout=10):
        args = [PIXD, "--listen", f"127.0.0.1:{self.port}", "--db", self.db, "--wait-ms", str(WAIT_MS),
                "--no-access-log"] + self.extra

        def pre():
            if self.nofile:
                import resource
                resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                     preexec_fn=pre)
        logf.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pixd exited {self.proc.returncode} at start; see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("pixd does not listen")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self):
        """SIGTERM; returns the exit status (None when it had to be killed)."""
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def crashed(self):
        """True when the process died by a signal we did not send (a crash)."""
        return self.proc is not None and self.proc.poll() is not None and self.proc.returncode not in (0, -9)


def http_get(port, path, headers=None, timeout=10, method="GET"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        c.close()


def wait_health(port, want=200, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if http_get(port, "/health", timeout=3)[0] == want:
                return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


# ---------------------------------------------------------------------------------------------
# The drain


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.receipts = {}  # endToEndId -> count (replays included)
        self.receipt_iids = {}  # endToEndId -> set of interation ids (Pull-Next) it came with
        self.receipt_log = {}  # endToEndId -> [(client time received, stream key, interation id)]
        self.stream_ok_sent = {}  # stream key -> client time the last request answered 200/204 was sent
        self.confirmed_by = {}  # endToEndId -> (stream key, client time) of a 200/204 to its batch's Pull-Next
        self.gone = []  # (client time, stream key, uri) of every 410
        self.acked_sql = set()  # the client's endToEndIds of INSERTs whose COMMIT was answered
        self.acked_http = set()  # the client's endToEndIds of sends answered 201
        self.status = {}  # HTTP status -> count
        self.conn_errors = 0
        self.kills = {"mid-request": 0, "mid-long-poll": 0, "after-batch": 0}
        self.violations = []
        self.produced_calls = 0
        self.reads_ok = 0
        self.latencies = []  # (time, seconds) of 200 reads

    def count(self, status):
        with self.lock:
            self.status[status] = self.status.get(status, 0) + 1

    def violation(self, text):
        with self.lock:
            if len(self.violations) < 50:
                self.violations.append(text)


class Collector(threading.Thread):
    """Follows Pull-Next. On 503 or a broken connection it calls the same URI again (the retry the
    contract defines); on 410 it starts a new stream; on 429 it waits. kill_rate > 0 makes it "die"
    at random moments and come back as a new collector (a new stream)."""

    def __init__(self, drain, ispb, idx, kill_rate=0.0):
        super().__init__(daemon=True)
        self.d, self.ispb, self.idx, self.kill_rate = drain, ispb, idx, kill_rate
        self.accept = "multipart/json" if idx % 2 == 0 else "application/json"
        self.uri = None
        self.idle = False
        self.conn = None
        self.rng = random.Random(hash((ispb, idx, time.time())))
        self.retry_after = None  # Retry-After of the last answer
        self.streams = 0
        self.stream = None  # key of the stream this collector follows (None: the next call starts one)
        self.batch = []  # endToEndIds of the last batch read on it (a 200/204 to self.uri confirms them)

    def _close(self):
        if self.conn:
            self.conn.close()
            self.conn = None

    def _request(self, method, uri, timeout=20):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.d.port, timeout=timeout)
        self.conn.request(method, uri, headers={"Accept": self.accept})
        r = self.conn.getresponse()
        body = r.read()
        self.retry_after = r.getheader("Retry-After")
        if r.will_close:
            self._close()
        return r.status, r.getheader("Pull-Next"), body

    def _raw_kill(self, uri, hold):
        """Sends a request and hangs up after `hold` seconds without reading (a collector killed)."""
        try:
            with socket.create_connection(("127.0.0.1", self.d.port), timeout=3) as s:
                s.sendall(f"GET {uri} HTTP/1.1\r\nHost: x\r\nAccept: {self.accept}\r\n\r\n".encode())
                time.sleep(hold)
        except OSError:
            pass

    def _maybe_die(self):
        if self.kill_rate <= 0 or self.rng.random() >= self.kill_rate:
            return False
        mode = self.rng.choice(["mid-request", "mid-long-poll", "after-batch"])
        uri = self.uri or f"/api/pix/{self.ispb}/stream/start"
        if mode == "mid-request":
            self._raw_kill(uri, self.rng.uniform(0, 0.03))
        elif mode == "mid-long-poll":
            self._raw_kill(uri, self.rng.uniform(0.2, 0.8))
        # after-batch: simply never call Pull-Next again
        with self.d.stats.lock:
            self.d.stats.kills[mode] += 1
        self._close()
        self.uri = None  # the process is gone; a new collector starts a new stream
        self.stream, self.batch = None, []
        return True

    def _answered(self, status, t_sent):
        """Client-side facts of a 200/204 on the followed stream: the stream was read at t_sent or
        later, and the batch whose Pull-Next this was is confirmed."""
        st = self.d.stats
        with st.lock:
            st.stream_ok_sent[self.stream] = max(st.stream_ok_sent.get(self.stream, 0), t_sent)
            for e2e in self.batch:
                st.confirmed_by.setdefault(e2e, (self.stream, time.monotonic()))

    def run(self):
        st = self.d.stats
        deadline = time.monotonic() + self.d.max_seconds
        while not self.d.stop_collectors.is_set() and time.monotonic() < deadline:
            if self._maybe_die():
                continue
            uri = self.uri or f"/api/pix/{self.ispb}/stream/start"
            if self.uri is None:
                self.streams += 1
                self.stream, self.batch = f"{self.ispb}/{self.idx}/{self.streams}", []
            t0 = time.monotonic()
            try:
                status, pull_next, body = self._request("GET", uri)
            except (OSError, http.client.HTTPException):
                with st.lock:
                    st.conn_errors += 1
                self._close()
                time.sleep(0.2)
                continue  # retry the same URI
            st.count(status)
            if status in (200, 204) and self.uri is not None:
                self._answered(status, t0)
            if status == 200:
                try:
                    v = json.loads(body)
                except ValueError:
                    st.violation(f"200 with a body that is not JSON: {body[:100]!r}")
                    continue
                msgs = v if isinstance(v, list) else [v]
                t1 = time.monotonic()
                with st.lock:
                    st.reads_ok += 1
                    st.latencies.append((t1, t1 - t0))
                    st.stream_ok_sent[self.stream] = max(st.stream_ok_sent.get(self.stream, 0), t0)
                    iid = (pull_next or "").rsplit("/", 1)[-1]
                    for m in msgs:
                        e2e = m.get("endToEndId")
                        st.receipts[e2e] = st.receipts.get(e2e, 0) + 1
                        st.receipt_iids.setdefault(e2e, set()).add(iid)
                        st.receipt_log.setdefault(e2e, []).append((t1, self.stream, iid))
                        if m.get("recebedor", {}).get("ispb") != self.ispb:
                            st.violations.append(f"message for another ISPB: {e2e}")
                self.idle = False
                self.uri = pull_next
                self.batch = [m.get("endToEndId") for m in msgs]
            elif status == 204:
                with st.lock:
                    st.stream_ok_sent[self.stream] = max(st.stream_ok_sent.get(self.stream, 0), t0)
                self.idle = True
                self.uri = pull_next
                self.batch = []
            elif status == 410:
                with st.lock:
                    st.gone.append((time.monotonic(), self.stream, uri))
                if self.d.gone_fails:
                    st.violation(f"410 on {uri} (stream {self.stream}): a stream did not survive")
                self.uri = None
                self.stream, self.batch = None, []
            elif status == 429:
                time.sleep(0.3)
            elif status == 503:
                if not self.retry_after:
                    st.violation(f"503 without Retry-After on {uri}")
                time.sleep(0.2)
            else:
                st.violation(f"{status} on {uri}: {body[:200]!r}")
                self.uri = None
                time.sleep(0.2)
            if status in (200, 204) and not pull_next:
                st.violation(f"{status} without Pull-Next on {uri}")
        # Leaving: DELETE on Pull-Next confirms the last batch and closes the stream.
        if self.uri:
            for _ in range(5):
                try:
                    t0 = time.monotonic()
                    status, _, _ = self._request("DELETE", self.uri, timeout=10)
                    st.count(f"DELETE {status}")
                    if status in (200, 204):
                        self._answered(status, t0)
                    elif status == 410:
                        with st.lock:
                            st.gone.append((time.monotonic(), self.stream, self.uri))
                        if self.d.gone_fails:
                            st.violation(f"DELETE 410 on {self.uri} (stream {self.stream}): a stream did not survive")
                    elif status == 503 and not self.retry_after:
                        st.violation(f"DELETE 503 without Retry-After on {self.uri}")
                    if status != 503:
                        break
                except (OSError, http.client.HTTPException):
                    self._close()
                time.sleep(0.3)
        self._close()


def client_ids(payer, rng, n):
    """n endToEndIds chosen by the client: E + payer + the client's UTC minute + 11 random characters."""
    minute = time.strftime("%Y%m%d%H%M", time.gmtime())
    alnum = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789"
    return [f"E{payer}{minute}" + "".join(rng.choice(alnum) for _ in range(11)) for _ in range(n)]


def send_body(ids, ispb):
    """The send route's JSON for the client's ids, addressed to ispb, paid by HTTP_PAYER."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".%03dZ" % (int(now * 1000) % 1000)
    return json.dumps([{"endToEndId": e, "valor": 1.00,
                        "pagador": {"nome": "Fault Sender", "cpfCnpj": "52998224725", "ispb": HTTP_PAYER,
                                    "agencia": "0001", "contaTransacional": "1231231", "tipoConta": "CACC"},
                        "recebedor": {"nome": "Fault Receiver", "cpfCnpj": "11222333000181", "ispb": ispb,
                                      "agencia": "0361", "contaTransacional": "1210098", "tipoConta": "SVGS"},
                        "campoLivre": "", "txId": "fault" + e[-11:], "dataHoraPagamento": stamp}
                       for e in ids]).encode()


def acked_insert_sql(ispb, ids):
    """One INSERT of valid messages for ispb with the client's endToEndIds `ids` (paid by SQL_PAYER),
    RETURNING them: the ids come back when it committed."""
    cols = ("end_to_end_id, valor, pagador_nome, pagador_cpf_cnpj, pagador_ispb, pagador_agencia, pagador_conta, "
            "pagador_tipo_conta, recebedor_nome, recebedor_cpf_cnpj, recebedor_ispb, recebedor_agencia, "
            "recebedor_conta, recebedor_tipo_conta, campo_livre, tx_id, data_hora_pagamento")
    assert all(re.fullmatch(r"E[0-9]{20}[A-Za-z0-9]{11}", e) for e in ids) and re.fullmatch(r"[0-9]{8}", ispb)
    arr = "ARRAY[" + ", ".join(f"'{e}'" for e in ids) + "]"
    return (f"INSERT INTO pix.message ({cols}) SELECT e, '1.00', 'Fault Producer', '52998224725', "
            f"'{SQL_PAYER}', '0001', '1231231', 'CACC', 'Fault Receiver', '11222333000181', '{ispb}', '0361', "
            f"'1210098', 'SVGS', '', 'fault' || right(e, 11), date_trunc('milliseconds', now()) "
            f"FROM unnest({arr}) e RETURNING end_to_end_id")


class Producer(threading.Thread):
    """Inserts messages: via POST /api/util/msgs (through the shim) or via SQL (INSERT ... RETURNING,
    through psql), until told to stop, and keeps their acknowledgements."""

    def __init__(self, drain, via, period):
        super().__init__(daemon=True)
        self.d, self.via, self.period = drain, via, period

    def _produce(self, rng, ispb, n, call):
        st = self.d.stats
        if self.via == "http":
            ids = client_ids(HTTP_PAYER, rng, n)
            c = http.client.HTTPConnection("127.0.0.1", self.d.port, timeout=10)
            try:
                c.request("POST", f"/api/pix/{HTTP_PAYER}/msgs", body=send_body(ids, ispb),
                          headers={"Content-Type": "application/json"})
                r = c.getresponse()
                status, body, retry_after = r.status, r.read(), r.getheader("Retry-After")
            finally:
                c.close()
            st.count(f"POST {status}")
            if status >= 500 and status != 503:
                st.violation(f"POST answered {status}")
            if status == 503 and not retry_after:
                st.violation("POST 503 without Retry-After")
            if status == 201:
                if json.loads(body).get("accepted") != n:
                    st.violation(f"send of {n} new ids answered {body[:100]!r}")
                with st.lock:
                    st.acked_http.update(ids)
            elif status != 503:
                st.violation(f"send answered {status}: {body[:200]!r}")
            return
        ids = client_ids(SQL_PAYER, rng, n)
        if SABOTAGE == "lose_acked" and not self.d.sabotaged:
            out = self.d.sabotage_lose_acked(ispb, ids)
        else:
            out = psql(acked_insert_sql(ispb, ids), dbname=self.d.dbname, check=False, timeout=15)
        if out is None:
            return  # not acknowledged: it may or may not have committed
        returned = sorted(line for line in out.splitlines() if line)
        if returned != sorted(ids):
            st.violation(f"INSERT of {n} ids acknowledged {len(returned)} others")
        with st.lock:
            st.acked_sql.update(ids)

    def run(self):
        rng = random.Random()
        deadline = time.monotonic() + self.d.max_seconds
        call = 0
        while not self.d.stop_producers.is_set() and time.monotonic() < deadline:
            ispb = rng.choice(self.d.ispbs)
            n = rng.randint(1, 15)
            call += 1
            try:
                self._produce(rng, ispb, n, call)
                with self.d.stats.lock:
                    self.d.stats.produced_calls += 1
            except (OSError, http.client.HTTPException, subprocess.TimeoutExpired):
                pass  # not acknowledged: it may or may not have committed
            time.sleep(self.period)


INVARIANT_SQL = """
WITH pending AS (
    SELECT p.id, count(*) AS n FROM pix.stream s, unnest(s.pending_ids) AS p(id)
     WHERE s.state = 'o' GROUP BY p.id),
ready AS (SELECT message_id AS id, count(*) AS n FROM pix.ready GROUP BY message_id),
conf AS (
    SELECT m.id, count(*) AS n, min(i.confirmed_at) AS first_confirmed
      FROM pix.iteration i, unnest(i.message_ids) AS m(id)
     WHERE i.confirmed_at IS NOT NULL GROUP BY m.id),
deliv AS (
    SELECT m.id, count(*) AS n, count(*) FILTER (WHERE i.requeued_at IS NOT NULL) AS requeued,
           max(i.delivered_at) AS last_delivered
      FROM pix.iteration i, unnest(i.message_ids) AS m(id) GROUP BY m.id),
places AS (
    SELECT msg.id, coalesce(r.n, 0) AS in_ready, coalesce(p.n, 0) AS in_pending,
           coalesce(c.n, 0) AS confirmations, c.first_confirmed,
           coalesce(d.n, 0) AS deliveries, coalesce(d.requeued, 0) AS requeued, d.last_delivered
      FROM pix.message msg
      LEFT JOIN ready r ON r.id = msg.id LEFT JOIN pending p ON p.id = msg.id
      LEFT JOIN conf c ON c.id = msg.id LEFT JOIN deliv d ON d.id = msg.id)
SELECT json_build_object(
  'total', count(*),
  'confirmed', count(*) FILTER (WHERE confirmations > 0),
  'waiting', count(*) FILTER (WHERE confirmations = 0 AND in_ready + in_pending = 1),
  'lost', count(*) FILTER (WHERE confirmations = 0 AND in_ready + in_pending = 0),
  'in_two_streams', count(*) FILTER (WHERE in_pending > 1),
  'in_two_places', count(*) FILTER (WHERE in_ready + in_pending > 1),
  'confirmed_but_queued', count(*) FILTER (WHERE confirmations > 0 AND in_ready + in_pending > 0),
  'confirmed_twice', count(*) FILTER (WHERE confirmations > 1),
  'delivered_after_confirmed', count(*) FILTER (WHERE last_delivered > first_confirmed),
  'redelivered', count(*) FILTER (WHERE deliveries > 1),
  'requeued_deliveries', coalesce(sum(requeued), 0))
FROM places
"""

SAMPLE_SQL = """
SELECT json_build_object(
  'in_two_streams', (SELECT count(*) FROM (SELECT p.id FROM pix.stream s, unnest(s.pending_ids) p(id)
                      WHERE s.state = 'o' GROUP BY p.id HAVING count(*) > 1) x),
  'ready_and_pending', (SELECT count(*) FROM pix.ready r WHERE EXISTS (
                      SELECT 1 FROM pix.stream s WHERE s.state = 'o' AND r.message_id = ANY (s.pending_ids))))
"""


def idle_seconds(text):
    """'2s', '30s', '1min' -> seconds."""
    m = re.fullmatch(r"([0-9.]+)\s*(ms|s|min)?", text.strip())
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "min": 60, None: 1}[m.group(2)]


def unexplained_duplicate(log_entries, ok_sent, confirmed_by, idle_timeout):
    """Why a message the collectors received under several interation ids is not a legal redelivery,
    or None -- from the client's own records only. log_entries: [(time received, stream, iid)];
    ok_sent: stream -> client time the last request answered 200/204 on it was sent; confirmed_by:
    (stream, time) of the 200/204 that confirmed it, if any."""
    deliveries = []
    for t, stream, iid in sorted(log_entries):
        if not deliveries or deliveries[-1][2] != iid:
            deliveries.append((t, stream, iid))
    for (t_a, s_a, iid_a), (t_b, s_b, iid_b) in zip(deliveries, deliveries[1:]):
        if s_a == s_b:
            return f"received twice on stream {s_a} under {iid_a} and {iid_b}"
        if confirmed_by and confirmed_by[0] == s_a:
            return f"confirmed on stream {s_a} ({iid_a}), received again on {s_b} ({iid_b})"
        last_read = ok_sent.get(s_a, t_a)
        if t_b < last_read + idle_timeout:
            return (f"received on {s_b} ({iid_b}) {t_b - last_read:.2f} s after the last read of {s_a} "
                    f"({iid_a}), which held it: less than the idle timeout ({idle_timeout:g} s)")
    return None


class Drain:
    def __init__(self, name, dbname, port=HTTP_PORT, n_ispbs=3, collectors_per_ispb=6, kill_rate=0.0,
                 http_producers=1, sql_producers=1, produce_period=0.15, max_seconds=240, gone_fails=False,
                 idle_timeout=IDLE_TIMEOUT):
        self.name, self.dbname, self.port = name, dbname, port
        self.gone_fails = gone_fails  # a 410 is a violation (no outage here outlasts the idle timeout)
        self.idle_timeout = idle_seconds(idle_timeout)
        self.ispbs = ["%08d" % random.randrange(10_000_000, 99_999_999) for _ in range(n_ispbs)]
        self.stats = Stats()
        self.stop_producers = threading.Event()
        self.stop_collectors = threading.Event()
        self.stop_sampler = threading.Event()
        self.max_seconds = max_seconds
        self.collectors = [Collector(self, ispb, i, kill_rate) for ispb in self.ispbs
                           for i in range(collectors_per_ispb)]
        self.producers = ([Producer(self, "http", produce_period) for _ in range(http_producers)] +
                          [Producer(self, "sql", produce_period * 2) for _ in range(sql_producers)])
        self.samples = 0
        self.sabotaged = False
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.t0 = None

    def _sample(self):
        """Checks, once a second while the drain runs, that no message is in two open streams' pending
        batches nor both ready and pending (one statement: one snapshot)."""
        while not self.stop_sampler.wait(1.0):
            try:
                out = psql(SAMPLE_SQL, dbname=self.dbname, check=False, timeout=10)
            except subprocess.TimeoutExpired:
                continue
            if not out:
                continue  # database down: nothing to sample
            v = json.loads(out)
            self.samples += 1
            if v["in_two_streams"] or v["ready_and_pending"]:
                self.stats.violation(f"sample: {v}")

    def start(self):
        self.t0 = time.monotonic()
        for t in self.collectors + self.producers + [self.sampler]:
            t.start()

    def finish(self, drain_timeout=40):
        """Stops producing, lets collectors empty the queue, stops them (each DELETEs its Pull-Next),
        and runs the invariant check. Returns a dict of figures."""
        self.stop_producers.set()
        for p in self.producers:
            p.join(20)
        t_stopped = time.monotonic()
        deadline = t_stopped + (0 if SABOTAGE == "undrained" else drain_timeout)
        drained = False
        while time.monotonic() < deadline:
            ispbs = ", ".join(f"'{i}'" for i in self.ispbs)
            out = psql(f"SELECT count(*) FROM pix.message m WHERE m.recebedor_ispb IN ({ispbs}) AND NOT EXISTS "
                       "(SELECT 1 FROM pix.iteration i WHERE i.confirmed_at IS NOT NULL AND m.id = ANY (i.message_ids))",
                       dbname=self.dbname, check=False, timeout=20)
            if out is not None and int(out) == 0 and all(c.idle for c in self.collectors):
                drained = True
                break
            time.sleep(0.5)
        waited = time.monotonic() - t_stopped
        self.stop_collectors.set()
        for c in self.collectors:
            c.join(30)
        self.stop_sampler.set()
        self.sampler.join(15)
        elapsed = time.monotonic() - self.t0
        inv = json.loads(psql(INVARIANT_SQL, dbname=self.dbname, timeout=60))
        st = self.stats
        if not drained:
            st.violation(f"not drained: messages still unconfirmed or collectors busy {waited:.0f} s after the "
                         "producers stopped")
        dups = {k: v for k, v in st.receipt_iids.items() if len(v) > 1}
        unexplained = {}
        for k in sorted(dups):
            why = unexplained_duplicate(st.receipt_log.get(k, []), st.stream_ok_sent, st.confirmed_by.get(k),
                                        self.idle_timeout)
            if why:
                unexplained[k] = why
        for k in list(unexplained)[:10]:
            st.violation(f"unexplained duplicate {k}: {unexplained[k]}")
        acked_lost, acked_http_short = self._check_acknowledgements()
        if self.gone_fails and st.gone:
            st.violation(f"{len(st.gone)} answers 410: streams lost, e.g. {st.gone[:3]}")
        bad5xx = sum(v for k, v in st.status.items() if isinstance(k, int) and k >= 500 and k != 503)
        if bad5xx:
            st.violation(f"{bad5xx} 5xx other than 503")
        for key in ("lost", "in_two_streams", "in_two_places", "confirmed_but_queued", "confirmed_twice",
                    "delivered_after_confirmed"):
            if inv[key]:
                st.violation(f"invariant: {key} = {inv[key]}")
        if inv["total"] - inv["confirmed"] - inv["waiting"] != inv["lost"]:
            st.violation(f"accounting: {inv}")
        received_distinct = len(st.receipts)
        # End to end: a message confirmed must have reached a collector (else it was lost on the way).
        out = psql("""SELECT DISTINCT msg.end_to_end_id FROM pix.iteration i, unnest(i.message_ids) m(id)
                      JOIN pix.message msg ON msg.id = m.id WHERE i.confirmed_at IS NOT NULL""",
                   dbname=self.dbname, timeout=60)
        confirmed_ids = set(line for line in out.splitlines() if line)
        never_received = confirmed_ids - set(st.receipts)
        if never_received:
            st.violation(f"{len(never_received)} confirmed messages no collector received, e.g. "
                         f"{sorted(never_received)[:3]}")
        return {
            "name": self.name,
            "acked_sql": len(st.acked_sql),
            "acked_http": len(st.acked_http),
            "gone_410": len(st.gone),
            "acked_lost": acked_lost,
            "acked_http_missing": acked_http_short,
            "seconds": round(elapsed, 1),
            "ispbs": len(self.ispbs),
            "collectors": len(self.collectors),
            "in": inv["total"],
            "out": inv["confirmed"],
            "still_queued": inv["waiting"],
            "lost": inv["lost"] + len(never_received) + acked_lost + acked_http_short,
            "confirmed_never_received": len(never_received),
            "received": sum(st.receipts.values()),
            "received_distinct": received_distinct,
            "dup_client": len(dups),
            "replays": sum(st.receipts.values()) - sum(len(v) for v in st.receipt_iids.values()),
            "dup_unexplained": len(unexplained),
            "redelivered_db": inv["redelivered"],
            "requeued_deliveries": inv["requeued_deliveries"],
            "in_two_streams": inv["in_two_streams"],
            "delivered_after_confirmed": inv["delivered_after_confirmed"],
            "status": {str(k): v for k, v in sorted(st.status.items(), key=lambda kv: str(kv[0]))},
            "conn_errors": st.conn_errors,
            "kills": dict(st.kills),
            "samples": self.samples,
            "drained": drained,
            "violations": list(st.violations),
        }

    def _check_acknowledgements(self):
        """Every acknowledged endToEndId (the client's own) was received by a collector or is in the
        database still queued. Returns (acknowledged SQL ids lost, acknowledged sent ids lost)."""
        st = self.stats
        ispbs = ", ".join(f"'{i}'" for i in self.ispbs)
        out = psql(f"""SELECT coalesce(json_agg(json_build_array(m.end_to_end_id,
                                    EXISTS (SELECT 1 FROM pix.ready r WHERE r.message_id = m.id)
                                    OR EXISTS (SELECT 1 FROM pix.stream s WHERE s.state = 'o'
                                               AND m.id = ANY (s.pending_ids)))), '[]')
                         FROM pix.message m WHERE m.pagador_ispb IN ('{SQL_PAYER}', '{HTTP_PAYER}')
                          AND m.recebedor_ispb IN ({ispbs})""", dbname=self.dbname, timeout=60)
        rows = json.loads(out)
        queued = {e2e for e2e, q in rows if q}
        present = {e2e for e2e, _ in rows}
        res = []
        for what, acked in (("INSERTed", st.acked_sql), ("sent (201)", st.acked_http)):
            lost = sorted(e for e in acked if e not in st.receipts and e not in queued)
            if lost:
                st.violation(f"{len(lost)} acknowledged {what} messages neither received nor queued "
                             f"({sum(e not in present for e in lost)} gone from pix.message), e.g. {lost[:3]}")
            res.append(len(lost))
        return res[0], res[1]

    def sabotage_lose_acked(self, ispb, ids):
        """PIX_FAULT_SABOTAGE=lose_acked: an INSERT whose COMMIT is answered, with every id RETURNed, but
        one of its messages deleted (ready row and message) in the same transaction: acknowledged, never
        deliverable. Returns the ids the INSERT returned (None when it failed)."""
        out = subprocess.run([PSQL, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                              f"{base()} dbname={self.dbname}", "-c", "BEGIN", "-c", acked_insert_sql(ispb, ids),
                              "-c", f"DELETE FROM pix.ready WHERE message_id = (SELECT id FROM pix.message "
                                    f"WHERE end_to_end_id = '{ids[0]}')",
                              "-c", f"DELETE FROM pix.message WHERE end_to_end_id = '{ids[0]}'", "-c", "COMMIT"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=15)
        if out.returncode != 0:
            return None
        self.sabotaged = True
        log(f"SABOTAGE lose_acked: {ids[0]} acknowledged and deleted before its COMMIT")
        return out.stdout
