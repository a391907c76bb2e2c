"""Helpers of the end-to-end suite: PostgreSQL through psql, shim/pixd processes, an HTTP client,
collectors that follow Pull-Next, and a generator of valid Pix messages for plain INSERTs.

Environment (test/run-all.sh sets them; every one is optional):
  PIX_PG            libpq conninfo of a running PostgreSQL 15 with the extension installed, without
                    dbname, as a superuser (e.g. "host=/tmp/x port=5493 user=postgres"). Without it the
                    suite starts its own throw-away cluster with scripts/cluster.sh.
  PIX_PIXD          the server binary (default: shim/pixd of this tree)
  PIX_PIXD_WRAPPER  a command prefix for every pixd (e.g. "valgrind -q --error-exitcode=99")
  PIX_E2E_TMP       where logs, pid files (pixd.<pid>) and the suite's own clusters go
  PGBIN             PostgreSQL's bin directory (default /usr/lib/postgresql/15/bin)
  PIX_E2E_SHARDS    N: every database the suite makes is a sharded deployment instead: a router database
                    (router/pix_router.sql) of that name in front of N shard databases <name>_s0.. on the
                    same PostgreSQL; the servers talk to the router, SQL helpers go through it too.

Standard library only. Every wait is bounded.
"""

import datetime
import gzip
import http.client
import json
import os
import random
import re
import select
import shlex
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PGBIN = os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")
PIXD = os.environ.get("PIX_PIXD", os.path.join(ROOT, "shim", "pixd"))
WRAPPER = shlex.split(os.environ.get("PIX_PIXD_WRAPPER", ""))
SLOW = 5.0 if WRAPPER else 1.0  # time factor for bounds when running under valgrind

_tmp = os.environ.get("PIX_E2E_TMP")
if not _tmp:
    _tmp = tempfile.mkdtemp(prefix="pix-e2e.")
    os.chmod(_tmp, 0o755)  # the postgres OS user runs the suite's own clusters in here
os.makedirs(_tmp, exist_ok=True)
TMP = _tmp

STREAM_ID_RE = r"[A-Za-z0-9_-]+"
PROBLEM_FIELDS = ("type", "title", "status", "detail")
MESSAGE_KEYS = ["endToEndId", "valor", "pagador", "recebedor", "campoLivre", "txId", "dataHoraPagamento"]
PARTY_KEYS = ["nome", "cpfCnpj", "ispb", "agencia", "contaTransacional", "tipoConta"]


def log(*args):
    print(*args, flush=True)


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A PostgreSQL cluster of the suite's own, managed by scripts/cluster.sh."""

    def __init__(self, name):
        self.dir = os.path.join(TMP, name)
        self.port = free_port()
        self.conninfo = None

    def start(self):
        out = subprocess.run([os.path.join(ROOT, "scripts", "cluster.sh"), "start", self.dir, str(self.port)],
                             check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
        info = out.stdout.strip().splitlines()[-1]
        # "host=... port=... dbname=postgres user=postgres" -> drop dbname
        self.conninfo = " ".join(p for p in info.split() if not p.startswith("dbname="))
        return self.conninfo

    def stop(self):
        subprocess.run([os.path.join(ROOT, "scripts", "cluster.sh"), "stop", self.dir],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)


_own_cluster = None


def base_conninfo():
    """The conninfo (no dbname) of the PostgreSQL the suite runs against."""
    global _own_cluster
    pg = os.environ.get("PIX_PG")
    if pg:
        return pg
    if _own_cluster is None:
        _own_cluster = Cluster("pg")
        _own_cluster.start()
        os.environ["PIX_PG"] = _own_cluster.conninfo
        import atexit
        atexit.register(_own_cluster.stop)
    return _own_cluster.conninfo


def conninfo(dbname, base=None):
    return f"{base or base_conninfo()} dbname={dbname}"


def psql(sql, dbname="postgres", base=None, timeout=60, check=True):
    """Runs sql through psql; returns stdout (unaligned, tuples only)."""
    out = subprocess.run([os.path.join(PGBIN, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                          conninfo(dbname, base), "-c", sql],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise RuntimeError(f"psql failed ({out.returncode}): {out.stderr.strip()}\nSQL: {sql[:500]}")
    return out.stdout if check else out


def sql_literal(s):
    return "'" + s.replace("'", "''") + "'"


SHARDS = int(os.environ.get("PIX_E2E_SHARDS") or 0)


def shard_names(name):
    return [f"{name}_s{k}" for k in range(SHARDS)]


def create_database(name, gucs=None, base=None):
    """A fresh database with the extension, and per-database GUCs (ALTER DATABASE ... SET). With
    PIX_E2E_SHARDS, a router of that name in front of shard databases that get the extension and GUCs."""
    if not SHARDS:
        return _plain_database(name, gucs, base)
    drop_database(name, base=base)
    psql(f"CREATE DATABASE {name}", base=base)
    # the router's conninfos name no user: PL/Proxy logs in as the caller
    shards = [" ".join(p for p in _plain_database(s, gucs, base).split() if not p.startswith("user="))
              for s in shard_names(name)]
    subprocess.run([os.path.join(ROOT, "scripts", "shards.sh"), "init", conninfo(name, base)] + shards,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    return conninfo(name, base)


def _plain_database(name, gucs, base):
    assert re.fullmatch(r"[a-z_][a-z0-9_]*", name)
    psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", base=base)
    psql(f"CREATE DATABASE {name}", base=base)
    psql("CREATE EXTENSION pix", dbname=name, base=base)
    for key, value in (gucs or {}).items():
        psql(f"ALTER DATABASE {name} SET {key} = {sql_literal(str(value))}", base=base)
    return conninfo(name, base)


def drop_database(name, base=None):
    for db in [name] + shard_names(name):
        psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", base=base, check=False)


_ispbs = set()
_ispb_lock = threading.Lock()


def new_ispb():
    """An ISPB no other test of this run uses."""
    with _ispb_lock:
        while True:
            v = "%08d" % random.randrange(10_000_000, 99_999_999)
            if v not in _ispbs:
                _ispbs.add(v)
                return v


# ---------------------------------------------------------------------------------------------
# Valid Pix messages, for plain INSERTs


def _check_digit(digits, weights):
    s = sum(int(d) * w for d, w in zip(digits, weights)) % 11
    return "0" if s < 2 else str(11 - s)


def make_cpf(rng=random):
    while True:
        base = "".join(rng.choice(string.digits) for _ in range(9))
        if len(set(base)) > 1:
            break
    d1 = _check_digit(base, range(10, 1, -1))
    d2 = _check_digit(base + d1, range(11, 1, -1))
    return base + d1 + d2


def make_cnpj(rng=random):
    while True:
        base = "".join(rng.choice(string.digits) for _ in range(8)) + "0001"
        if len(set(base)) > 1:
            break
    w1 = [5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2]
    w2 = [6] + w1
    d1 = _check_digit(base, w1)
    d2 = _check_digit(base + d1, w2)
    return base + d1 + d2


def valid_cpf(s):
    if not re.fullmatch(r"\d{11}", s) or len(set(s)) == 1:
        return False
    return s[9] == _check_digit(s[:9], range(10, 1, -1)) and s[10] == _check_digit(s[:10], range(11, 1, -1))


def valid_cnpj(s):
    if not re.fullmatch(r"\d{14}", s) or len(set(s)) == 1:
        return False
    w1 = [5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2]
    return s[12] == _check_digit(s[:12], w1) and s[13] == _check_digit(s[:13], [6] + w1)


_e2e_counter = [0]
_e2e_lock = threading.Lock()


def make_message(recebedor_ispb, rng=random, **over):
    """A valid message (as the JSON dict the server must render), unique endToEndId."""
    now = datetime.datetime.now(datetime.timezone.utc)
    payer = over.pop("pagador_ispb", "%08d" % rng.randrange(0, 10**8))
    with _e2e_lock:
        _e2e_counter[0] += 1
        n = _e2e_counter[0]
    suffix = ("T%05d" % (n % 100000)) + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(5))
    m = {
        "endToEndId": "E" + payer + now.strftime("%Y%m%d%H%M") + suffix,
        "valor": "%d.%02d" % (rng.randrange(1, 100000), rng.randrange(0, 100)),
        "pagador": {"nome": "Marcos José", "cpfCnpj": make_cpf(rng), "ispb": payer, "agencia": "0001",
                    "contaTransacional": "1231231", "tipoConta": "CACC"},
        "recebedor": {"nome": "Flavio José", "cpfCnpj": make_cnpj(rng), "ispb": recebedor_ispb, "agencia": "0361",
                      "contaTransacional": "1210098", "tipoConta": "SVGS"},
        "campoLivre": "",
        "txId": "tx" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(10)),
        "dataHoraPagamento": now.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (now.microsecond // 1000),
    }
    m.update(over)
    return m


def insert_sql(messages):
    """One INSERT statement enqueuing messages (dicts as make_message returns)."""
    rows = []
    for m in messages:
        p, r = m["pagador"], m["recebedor"]
        vals = [m["endToEndId"], m["valor"], p["nome"], p["cpfCnpj"], p["ispb"], p["agencia"],
                p["contaTransacional"], p["tipoConta"], r["nome"], r["cpfCnpj"], r["ispb"], r["agencia"],
                r["contaTransacional"], r["tipoConta"], m["campoLivre"], m["txId"], m["dataHoraPagamento"]]
        rows.append("(" + ", ".join(sql_literal(v) for v in vals) + ")")
    return ("INSERT INTO pix.message (end_to_end_id, valor, pagador_nome, pagador_cpf_cnpj, pagador_ispb, "
            "pagador_agencia, pagador_conta, pagador_tipo_conta, recebedor_nome, recebedor_cpf_cnpj, recebedor_ispb, "
            "recebedor_agencia, recebedor_conta, recebedor_tipo_conta, campo_livre, tx_id, data_hora_pagamento) "
            "VALUES " + ", ".join(rows))


def insert_messages(dbname, ispb, n, base=None):
    """Enqueues n messages for ispb with a plain INSERT; returns their endToEndIds in order."""
    msgs = [make_message(ispb) for _ in range(n)]
    psql(insert_sql(msgs), dbname=dbname, base=base)
    return [m["endToEndId"] for m in msgs]


def generate(dbname, ispb, n, base=None):
    """pix_generate_messages through psql; returns how many it reports."""
    return int(psql(f"SELECT pix_generate_messages('{ispb}', {int(n)})", dbname=dbname, base=base).strip())


def queued_ids(dbname, ispb, base=None):
    """endToEndIds of every message ever enqueued for ispb, in enqueue order."""
    out = psql(f"SELECT end_to_end_id FROM pix.message WHERE recebedor_ispb = '{ispb}' ORDER BY id",
               dbname=dbname, base=base)
    return [line for line in out.splitlines() if line]


# ---------------------------------------------------------------------------------------------
# The server


BAD_EXITS = []  # pixd processes that did not exit 0 on SIGTERM


class Pixd:
    """One shim/pixd process on a free loopback port."""

    def __init__(self, db, wait_ms=1000, pool=None, max_queue=None, extra=(), port=None):
        self.db = db
        self.wait_ms = wait_ms
        self.port = port or free_port()
        self.args = [PIXD, "--listen", f"127.0.0.1:{self.port}", "--db", db]
        if wait_ms is not None:
            self.args += ["--wait-ms", str(wait_ms)]
        if pool is not None:
            self.args += ["--pool", str(pool)]
        if max_queue is not None:
            self.args += ["--max-queue", str(max_queue)]
        self.args += list(extra)
        self.proc = None
        self.log_path = None
        self._log = None
        self._pidfile = None

    def start(self, timeout=10.0):
        self.log_path = os.path.join(TMP, f"pixd-{self.port}-{int(time.time() * 1000)}.log")
        self._log = open(self.log_path, "wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIXD_")}  # flags only
        self.proc = subprocess.Popen(WRAPPER + self.args, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env)
        self._pidfile = os.path.join(TMP, f"pixd.{self.proc.pid}")
        open(self._pidfile, "w").close()
        deadline = time.monotonic() + timeout * SLOW
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pixd exited with {self.proc.returncode} at start:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"pixd does not accept connections on port {self.port}:\n{self.log_tail()}")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=10.0):
        """SIGTERM and wait; returns the exit status (None if it had to be killed). A status other
        than 0 is also recorded in BAD_EXITS (run.py counts each as a failure)."""
        if self.proc is None or self._log is None:
            return self.proc.returncode if self.proc else None
        rc = self.proc.poll()
        if rc is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                rc = None
        if rc != 0:
            BAD_EXITS.append(f"pixd on port {self.port} exited with {rc} (log {self.log_path}):\n{self.log_tail(15)}")
        self._close()
        return rc

    def kill(self):
        """SIGKILL (a crash on purpose): its exit status is not judged."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close()

    def _close(self):
        if self._log:
            self._log.close()
            self._log = None
        if self._pidfile and os.path.exists(self._pidfile):
            os.unlink(self._pidfile)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=30):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return ""

    def client(self, timeout=30.0):
        return Client(self.port, timeout)


# ---------------------------------------------------------------------------------------------
# HTTP


class Response:
    def __init__(self, status, headers, body, elapsed):
        self.status = status
        self.headers = headers  # list of (name, value)
        self.raw = body  # as received (maybe gzip)
        self.elapsed = elapsed
        self.body = gzip.decompress(body) if self.header("Content-Encoding", "").lower() == "gzip" else body

    def header(self, name, default=None):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def json_ordered(self):
        return json.loads(self.body.decode("utf-8"), object_pairs_hook=list)

    def __repr__(self):
        return f"<{self.status} {dict(self.headers)} {self.body[:300]!r} {self.elapsed * 1000:.0f} ms>"


class Client:
    """HTTP/1.1 over one keep-alive connection; headers are sent exactly as given (no implicit
    Accept-Encoding)."""

    def __init__(self, port, timeout=30.0, ssl_context=None, source=None):
        self.port = port
        self.timeout = timeout
        self.conn = None
        self.ssl_context = ssl_context  # HTTPS (test_tls.py): an ssl.SSLContext, maybe with a client certificate
        self.source = source  # a local address to connect from (e.g. "127.0.0.2")

    def close(self):
        if self.conn:
            self.conn.close()
            self.conn = None

    def _drop_if_closed_by_server(self):
        """A keep-alive connection the server closed while idle is replaced before anything is sent
        on it. Nothing is ever sent twice: a request that fails once sent is the test's business
        (a server may have committed it before the connection broke). An idle HTTP/1.1 connection
        that is readable was closed (a FIN, or TLS's close_notify before it): the server sends
        nothing unasked."""
        sock = self.conn.sock if self.conn else None
        if sock is None:
            return
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            readable = True
        if readable:
            self.close()

    def request(self, method, path, headers=None, body=None, timeout=None):
        headers = dict(headers or {})
        t0 = time.monotonic()
        self._drop_if_closed_by_server()
        if self.conn is None:
            src = (self.source, 0) if self.source else None
            if self.ssl_context is not None:
                self.conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout or self.timeout,
                                                        context=self.ssl_context, source_address=src)
            else:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout or self.timeout,
                                                       source_address=src)
        elif timeout:
            self.conn.timeout = timeout
            if self.conn.sock:
                self.conn.sock.settimeout(timeout)
        try:
            self.conn.putrequest(method, path, skip_accept_encoding=True)
            for k, v in headers.items():
                self.conn.putheader(k, v)
            if body is not None:
                self.conn.putheader("Content-Length", str(len(body)))
            elif method in ("POST", "PUT", "PATCH"):
                self.conn.putheader("Content-Length", "0")
            self.conn.endheaders(body)
            r = self.conn.getresponse()
            data = r.read()
        except BaseException:
            self.close()
            raise
        resp = Response(r.status, r.getheaders(), data, time.monotonic() - t0)
        if r.will_close:
            self.close()
        return resp

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)


def raw_http(port, data, timeout=10.0):
    """Sends raw bytes; returns everything the server answered before closing or the timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        s.settimeout(1.0)
        while time.monotonic() < deadline:
            try:
                c = s.recv(65536)
            except socket.timeout:
                if chunks:
                    break
                continue
            if not c:
                break
            chunks.append(c)
        return b"".join(chunks)


class DroppingProxy:
    """A loopback TCP proxy in front of a server, for "the server committed, then the connection
    broke": it forwards each HTTP/1.1 request, reads the server's whole response, and for the next
    `drop` responses closes the client's connection instead of passing the response on. Counts the
    requests it forwarded (a client that re-sends shows up here)."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.drop = 0
        self.forwarded = []  # (method, path) of every request passed to the server
        self.dropped = []  # the responses swallowed, as raw bytes
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.closing = True
        self.listener.close()

    def _accept(self):
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    @staticmethod
    def _read_message(sock, buf, has_body):
        """One HTTP/1.1 message with a Content-Length body (or none): (bytes, rest of buf)."""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return None, buf
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        assert not re.search(rb"(?im)^transfer-encoding:", head), "the proxy handles Content-Length only"
        n = int(m.group(1)) if m and has_body(head) else 0
        while len(rest) < n:
            chunk = sock.recv(65536)
            if not chunk:
                return None, buf
            rest += chunk
        return head + b"\r\n\r\n" + rest[:n], rest[n:]

    def _serve(self, client):
        with client, socket.create_connection(("127.0.0.1", self.upstream_port), timeout=30) as up:
            cbuf, ubuf = b"", b""
            while True:
                req, cbuf = self._read_message(client, cbuf, lambda h: True)
                if req is None:
                    return
                method, path = req.split(b" ", 2)[:2]
                with self.lock:
                    self.forwarded.append((method.decode(), path.decode()))
                up.sendall(req)
                no_body = method == b"HEAD"
                resp, ubuf = self._read_message(up, ubuf, lambda h: not no_body and not re.match(
                    rb"HTTP/1\.[01] (1\d\d|204|304)", h))
                if resp is None:
                    return
                with self.lock:
                    swallow = self.drop > 0
                    if swallow:
                        self.drop -= 1
                        self.dropped.append(resp)
                if swallow:
                    client.shutdown(socket.SHUT_RDWR)
                    return
                client.sendall(resp)


# ---------------------------------------------------------------------------------------------
# Collectors


def messages_of(resp):
    """The messages of a 200 read, as a list (an object body is one message)."""
    v = resp.json()
    return v if isinstance(v, list) else [v]


class Collector:
    """Follows Pull-Next like a well-behaved collector. Every read is checked against the contract's
    invariants that hold for every read: 200/204 carry Pull-Next for this ISPB."""

    def __init__(self, pixd_or_port, ispb, accept=None, timeout=30.0):
        port = pixd_or_port.port if isinstance(pixd_or_port, Pixd) else pixd_or_port
        self.client = Client(port, timeout)
        self.ispb = ispb
        self.accept = accept
        self.pull_next = None  # the URI to call next
        self.previous = None  # the URI called last
        self.last = None

    def _headers(self, extra=None):
        h = {}
        if self.accept is not None:
            h["Accept"] = self.accept
        h.update(extra or {})
        return h

    def _check(self, r):
        if r.status in (200, 204):
            pn = r.header("Pull-Next")
            if pn is None or not re.fullmatch(rf"/api/pix/{self.ispb}/stream/{STREAM_ID_RE}", pn):
                raise AssertionError(f"bad or missing Pull-Next on {r!r}")
            if r.status == 200:
                ct = r.header("Content-Type", "")
                if not ct.lower().startswith("application/json"):
                    raise AssertionError(f"200 read with Content-Type {ct!r}")
        return r

    def start(self, headers=None, timeout=None):
        uri = f"/api/pix/{self.ispb}/stream/start"
        r = self._check(self.client.get(uri, headers=self._headers(headers), timeout=timeout))
        self.last = r
        if r.status in (200, 204):
            self.previous, self.pull_next = uri, r.header("Pull-Next")
        return r

    def next(self, headers=None, timeout=None):
        uri = self.pull_next
        r = self._check(self.client.get(uri, headers=self._headers(headers), timeout=timeout))
        self.last = r
        if r.status in (200, 204):
            self.previous, self.pull_next = uri, r.header("Pull-Next")
        return r

    def retry(self, headers=None, timeout=None):
        """GET on the URI called last again (the collector lost the answer)."""
        assert self.previous and not self.previous.endswith("/start"), "retry needs a previous interationId"
        return self._check(self.client.get(self.previous, headers=self._headers(headers), timeout=timeout))

    def delete(self, uri=None):
        return self.client.delete(uri or self.pull_next)

    def close(self):
        self.client.close()


def run_threads(fns, timeout):
    """Runs callables in threads; returns their results (exceptions re-raised)."""
    results = [None] * len(fns)
    errors = [None] * len(fns)

    def wrap(i, fn):
        try:
            results[i] = fn()
        except BaseException as e:  # noqa: BLE001
            errors[i] = e

    threads = [threading.Thread(target=wrap, args=(i, fn), daemon=True) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        raise AssertionError(f"threads still running after {timeout} s")
    for e in errors:
        if e is not None:
            raise e
    return results


def rmtree(path):
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# The suite's shared database and server (most tests use them, each with ISPBs of its own)

SUITE_DB = "pix_e2e"
SHARED_WAIT_MS = 1000
_shared = {}
_shared_lock = threading.Lock()


def shared():
    """(dbname, Pixd): the suite database and a server on it with --wait-ms 1000, made once."""
    with _shared_lock:
        if "pixd" not in _shared or not _shared["pixd"].alive():
            if "db" not in _shared:
                create_database(SUITE_DB)
                _shared["db"] = SUITE_DB
            _shared["pixd"] = Pixd(conninfo(SUITE_DB), wait_ms=SHARED_WAIT_MS).start()
        return _shared["db"], _shared["pixd"]


def shutdown_shared():
    """Stops the shared server; returns its exit status (None if it was never started)."""
    p = _shared.pop("pixd", None)
    return p.stop() if p else None


# ---------------------------------------------------------------------------------------------
# Assertions shared by the tests

import unittest  # noqa: E402


class PixTestCase(unittest.TestCase):
    maxDiff = 4000

    def setUp(self):
        self.db, self.pixd = shared()
        self.http = self.pixd.client()
        self.addCleanup(self.http.close)

    def collector(self, ispb, accept=None, pixd=None):
        c = Collector(pixd or self.pixd, ispb, accept=accept)
        self.addCleanup(c.close)
        return c

    def assertProblem(self, r, status, msg=None):
        """An RFC 9457 problem document with the given status."""
        ctx = f"{msg or ''} {r!r}"
        self.assertEqual(r.status, status, ctx)
        ct = r.header("Content-Type", "")
        self.assertEqual(ct.split(";")[0].strip().lower(), "application/problem+json", ctx)
        try:
            doc = r.json()
        except ValueError:
            self.fail(f"problem body is not JSON: {ctx}")
        self.assertIsInstance(doc, dict, ctx)
        for k in PROBLEM_FIELDS:
            self.assertIn(k, doc, ctx)
        self.assertIsInstance(doc["type"], str, ctx)
        self.assertIsInstance(doc["title"], str, ctx)
        self.assertTrue(doc["title"], ctx)
        self.assertIsInstance(doc["detail"], str, ctx)
        self.assertEqual(doc["status"], status, ctx)
        self.assertIsInstance(doc["status"], int, ctx)
        return doc

    def assertRetryAfter(self, r):
        ra = r.header("Retry-After")
        self.assertIsNotNone(ra, f"no Retry-After on {r!r}")
        self.assertRegex(ra.strip(), r"^\d+$", f"Retry-After is not delta-seconds: {r!r}")
        return int(ra)

    def assertAllow(self, r, methods):
        self.assertEqual(r.status, 405, repr(r))
        allow = ",".join(r.header_all("Allow"))
        got = {m.strip().upper() for m in allow.split(",") if m.strip()}
        self.assertTrue(set(methods) <= got, f"Allow {allow!r} should list {methods}: {r!r}")
        return got

    def assertMessagesFor(self, r, ispb, count=None, array=None):
        """A 200 read: JSON object (array=False) or array (array=True) of messages for ispb."""
        self.assertEqual(r.status, 200, repr(r))
        v = r.json()
        if array is True:
            self.assertIsInstance(v, list, repr(r))
            self.assertGreaterEqual(len(v), 1, repr(r))
        elif array is False:
            self.assertIsInstance(v, dict, repr(r))
        msgs = v if isinstance(v, list) else [v]
        for m in msgs:
            self.assertEqual(m["recebedor"]["ispb"], ispb, repr(r))
        if count is not None:
            self.assertEqual(len(msgs), count, repr(r))
        return [m["endToEndId"] for m in msgs]
