"""What an anonymous or unauthorized client can cost pixd and the database (issue 18, "walls that
hold"): HTTP/1.1 only, read and idle limits, connections per address, the budget of bytes received
and not yet handled, the age of a connection, /health without a query per request, bogus tokens
from a throttled address without a query, and a client certificate's expiry on a kept-alive
connection.

Real pixd, real PostgreSQL, real sockets (TLS where the finding is about TLS). Client addresses are
taken from 127.0.0.0/8 (each test its own), so per-address limits of one test touch no other.
Every wait is bounded; no assertion is on a duration.
"""

import datetime
import os
import socket
import ssl
import subprocess
import threading
import time
import unittest

import pixe2e
from pixe2e import Pixd, Client, psql

DB = "pix_e2e_walls"
PKI = os.path.join(pixe2e.ROOT, "scripts", "pki.sh")
_state = {}


def setUpModule():
    pixe2e.create_database(DB)
    d = os.path.join(pixe2e.TMP, "pki-walls")
    subprocess.run(["rm", "-rf", d], check=True)
    for args in (["ca", d], ["server", d], ["client", d, "a1"]):
        subprocess.run([PKI, *args], check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    _state["pki"] = d
    _state["A"] = pixe2e.new_ispb()


def tearDownModule():
    pixe2e.drop_database(DB)


def pki_path(name, ext="crt"):
    return os.path.join(_state["pki"], f"{name}.{ext}")


def fingerprint(cert):
    out = subprocess.run([PKI, "fingerprint", cert], check=True, stdout=subprocess.PIPE, text=True, timeout=30)
    return out.stdout.strip()


def short_lived_client(name, seconds):
    """A client certificate of the suite's CA whose notAfter is `seconds` from now (openssl ca: the
    x509 command of OpenSSL 3.0 only counts whole days)."""
    d = _state["pki"]
    conf = os.path.join(d, f"{name}.cnf")
    for f, text in (("index.txt", ""), ("serial", "01\n")):
        if not os.path.exists(os.path.join(d, f)):
            with open(os.path.join(d, f), "w") as fh:
                fh.write(text)
    with open(conf, "w") as f:
        f.write(f"[ca]\ndefault_ca = c\n[c]\ndatabase = {d}/index.txt\nnew_certs_dir = {d}\n"
                f"serial = {d}/serial\ndefault_md = sha256\npolicy = p\nunique_subject = no\n"
                "x509_extensions = ext\n[p]\ncommonName = supplied\n"
                "[ext]\nbasicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\n"
                "extendedKeyUsage = clientAuth\n")
    now = datetime.datetime.now(datetime.timezone.utc)
    start = (now - datetime.timedelta(minutes=5)).strftime("%Y%m%d%H%M%SZ")
    end = (now + datetime.timedelta(seconds=seconds)).strftime("%Y%m%d%H%M%SZ")
    key, csr, crt = (os.path.join(d, f"{name}.{x}") for x in ("key", "csr", "crt"))
    for cmd in (["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key],
                ["openssl", "req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", csr],
                ["openssl", "ca", "-batch", "-config", conf, "-cert", pki_path("ca"), "-keyfile",
                 pki_path("ca", "key"), "-in", csr, "-out", crt, "-startdate", start, "-enddate", end, "-notext"]):
        subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    return now + datetime.timedelta(seconds=seconds)


def metric(server, name):
    """One sample of pixd's /metrics (0 when absent); name may carry its labels."""
    c = Client(server.port, 10, ssl_context=getattr(server, "ssl_context", None))
    try:
        body = c.get("/metrics").body.decode()
    finally:
        c.close()
    for line in body.splitlines():
        if line.split(" ")[0] == name:
            return float(line.split(" ")[1])
    return 0.0


def tls_server(auth, extra=(), client_ca=False):
    args = ["--auth", auth, "--tls-cert", pki_path("server"), "--tls-key", pki_path("server", "key")]
    if client_ca:
        args += ["--client-ca", pki_path("ca")]
    s = Pixd(pixe2e.conninfo(DB), wait_ms=200, extra=args + list(extra)).start()
    s.ssl_context = ssl.create_default_context(cafile=pki_path("ca"))
    return s


def closed_within(sock, seconds, feed=None):
    """True when the server closes sock (end of stream or reset) within `seconds`; `feed` is sent
    every 200 ms meanwhile (a slow client)."""
    deadline = time.monotonic() + seconds
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            if feed:
                sock.sendall(feed)
            data = sock.recv(65536)
            if data == b"":
                return True
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def connect(port, source):
    s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    return s


class TestHttp11Only(unittest.TestCase):
    """HTTP/2 let one connection hold 100 requests with a body each, kept alive by PINGs: pixd
    speaks HTTP/1.1 only, over TLS (no ALPN h2) and in clear text (no h2c, no prior knowledge)."""

    def test_alpn_never_selects_h2(self):
        server = tls_server("token")
        self.addCleanup(server.stop)
        for offer, want in ((["h2", "http/1.1"], "http/1.1"), (["h2"], None)):
            with self.subTest(offer=offer):
                ctx = ssl.create_default_context(cafile=pki_path("ca"))
                ctx.set_alpn_protocols(offer)
                with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
                    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                        self.assertEqual(s.selected_alpn_protocol(), want)
                        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                        self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 200"))

    def test_h2c_upgrade_and_prior_knowledge_are_refused(self):
        server = Pixd(pixe2e.conninfo(DB), wait_ms=200).start()
        self.addCleanup(server.stop)
        preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        r = pixe2e.raw_http(server.port, preface, timeout=5)
        self.assertTrue(r.startswith(b"HTTP/1.1 400"), r[:100])
        r = pixe2e.raw_http(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                                         b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n", timeout=5)
        self.assertTrue(r.startswith(b"HTTP/1.1 200"), r[:100])


class TestReadLimits(unittest.TestCase):
    """Slow heads, idle keep-alive, connections per address, the age of a connection."""

    @classmethod
    def setUpClass(cls):
        cls.server = Pixd(pixe2e.conninfo(DB), wait_ms=200,
                          extra=["--read-timeout-ms", "1000", "--max-connections-per-address", "4",
                                 "--max-connection-age-s", "2"]).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_slow_head_is_closed(self):
        with connect(self.server.port, "127.0.0.11") as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            self.assertTrue(closed_within(s, 8, feed=b"X-Slow: 1\r\n"),
                            "a head trickled a header every 200 ms is never closed")

    def test_idle_keep_alive_is_closed(self):
        with connect(self.server.port, "127.0.0.12") as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(5)
            self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 200"))
            self.assertTrue(closed_within(s, 8), "an idle keep-alive connection stays open")

    def test_connections_per_address(self):
        port, before = self.server.port, metric(self.server, 'pixd_admission_refused_total{reason="per_address"}')
        held = [connect(port, "127.0.0.13") for _ in range(4)]
        try:
            for s in held:  # each was accepted: it answers
                s.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
                s.settimeout(5)
                self.assertTrue(s.recv(64).startswith(b"HTTP/1.1 200"))
            with connect(port, "127.0.0.13") as fifth:
                self.assertTrue(closed_within(fifth, 5), "a fifth connection of one address is served")
            self.assertGreater(metric(self.server, 'pixd_admission_refused_total{reason="per_address"}'), before)
            r = Client(port, 10, source="127.0.0.14").get("/openapi.json")
            self.assertEqual(r.status, 200, "another address is not refused")
        finally:
            for s in held:
                s.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the server notices the four closes
            try:
                c = Client(port, 5, source="127.0.0.13")
                if c.get("/openapi.json").status == 200:
                    c.close()
                    break
            except (ConnectionError, OSError, pixe2e.http.client.HTTPException):
                time.sleep(0.1)
        else:
            self.fail("the address's places are not given back when its connections close")

    def test_old_connection_closes_after_its_answer(self):
        c = Client(self.server.port, 10, source="127.0.0.15")
        self.addCleanup(c.close)
        r = c.get("/openapi.json")
        self.assertEqual(r.header("Connection", "").lower(), "keep-alive", repr(r))
        sock, closed = c.conn.sock, None
        for _ in range(30):  # a request every 0.3 s keeps it from idling out: its age closes it
            time.sleep(0.3)
            self.assertIs(c.conn.sock, sock, "one connection until the close")
            r = c.get("/openapi.json")
            self.assertEqual(r.status, 200, repr(r))
            if r.header("Connection", "").lower() == "close":
                closed = r
                break
        self.assertIsNotNone(closed, "a connection older than --max-connection-age-s stays open")


class TestBufferedBudget(unittest.TestCase):
    """Bytes received for requests not handled yet (a body on a GET route included: libh2o 2.2.5
    buffers it before any handler runs) are bounded in total: the largest are closed."""

    def test_bodies_beyond_the_budget_are_shed(self):
        server = Pixd(pixe2e.conninfo(DB), wait_ms=200, extra=["--max-buffered-mb", "1"]).start()
        self.addCleanup(server.stop)
        socks = [connect(server.port, f"127.0.0.{21 + i}") for i in range(3)]
        try:
            for s in socks:  # a body on a GET route, never finished: 1.8 MB held in all
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 600_000)
            closed = sum(closed_within(s, 3) for s in socks)
        finally:
            for s in socks:
                s.close()
        self.assertGreaterEqual(closed, 1, "1.8 MB held past a 1 MiB budget")
        self.assertLessEqual(closed, 2, "the budget sheds only what it must")
        self.assertGreaterEqual(metric(server, 'pixd_admission_refused_total{reason="buffered"}'), 1)
        self.assertEqual(server.client().get("/health").status, 200)


class TestHealthProbe(unittest.TestCase):
    """/health is open to anyone: a flood of it costs the database at most one query a second."""

    def test_health_flood_costs_at_most_one_query_a_second(self):
        server = Pixd(pixe2e.conninfo(DB), wait_ms=200).start()
        self.addCleanup(server.stop)
        name = 'pixd_db_calls_total{function="pix_health"}'
        before, t0 = metric(server, name), time.monotonic()
        counts = []

        def flood():
            c, n = Client(server.port, 10), 0
            try:
                end = time.monotonic() + 3
                while time.monotonic() < end:
                    r = c.get("/health")
                    assert r.status == 200, r
                    n += 1
            finally:
                c.close()
            return n

        counts = pixe2e.run_threads([flood] * 8, timeout=60)
        elapsed = time.monotonic() - t0
        queries = metric(server, name) - before
        self.assertGreater(sum(counts), 100, counts)
        self.assertLessEqual(queries, elapsed + 2, f"{queries} probes for {sum(counts)} requests in {elapsed:.1f} s")


class TestThrottledWithoutQuery(unittest.TestCase):
    """Bogus tokens from an address that keeps failing get 401 without a query, while a credential
    the database accepted recently, from the same address (a shared NAT), is served at once."""

    def test_bogus_tokens_cost_no_query_and_a_known_token_is_served(self):
        server = tls_server("token")
        self.addCleanup(server.stop)
        A, src = _state["A"], "127.0.0.31"
        good = Client(server.port, 30, ssl_context=server.ssl_context, source=src)
        self.addCleanup(good.close)
        token = psql(f"SELECT pix_token_issue('{A}', 'walls-good')", dbname=DB).strip()
        auth = {"Authorization": f"Bearer {token}"}
        self.assertEqual(good.delete(f"/api/pix/{A}/stream/stop", headers=auth).status, 200)
        bogus = {"Authorization": "Bearer pix_" + "1" * 64}

        def bogus_call():
            c = Client(server.port, 30, ssl_context=server.ssl_context, source=src)
            try:
                return c.delete(f"/api/pix/{A}/stream/stop", headers=bogus).status
            finally:
                c.close()

        for _ in range(6):  # the address earns its throttle
            self.assertEqual(bogus_call(), 401)
        name = 'pixd_db_calls_total{function="pix_streams_stop_all"}'
        before = metric(server, name)
        statuses = pixe2e.run_threads([bogus_call] * 20, timeout=60)
        self.assertEqual(set(statuses), {401})
        self.assertEqual(metric(server, name) - before, 0, "bogus tokens from a throttled address reached the database")
        self.assertGreaterEqual(metric(server, 'pixd_admission_refused_total{reason="throttled_no_query"}'), 20)
        r = good.delete(f"/api/pix/{A}/stream/stop", headers=auth)
        self.assertEqual(r.status, 200, repr(r))
        self.assertEqual(metric(server, name) - before, 1, "the known token's call is the only query")


class TestCertificateExpiry(unittest.TestCase):
    """A client certificate is checked at every request: a kept-alive connection does not outlive it."""

    def test_expired_certificate_on_a_kept_alive_connection(self):
        not_after = short_lived_client("soon", 6)
        psql(f"SELECT pix_certificate_add('{_state['A']}', '{fingerprint(pki_path('soon'))}', 'soon')", dbname=DB)
        server = tls_server("mtls", client_ca=True)
        self.addCleanup(server.stop)
        ctx = ssl.create_default_context(cafile=pki_path("ca"))
        ctx.load_cert_chain(pki_path("soon"), pki_path("soon", "key"))
        c = Client(server.port, 30, ssl_context=ctx)
        self.addCleanup(c.close)
        path = f"/api/pix/{_state['A']}/stream/stop"
        self.assertEqual(c.delete(path).status, 200)
        wait = (not_after - datetime.datetime.now(datetime.timezone.utc)).total_seconds() + 1.5
        self.assertGreater(wait, 0, "the certificate expired before the first request: make it live longer")
        time.sleep(wait)
        r = c.delete(path)  # a new connection's handshake would refuse the certificate: this is the old one
        self.assertEqual(r.status, 401, repr(r))
        self.assertEqual(r.header("Connection", "").lower(), "close", repr(r))


if __name__ == "__main__":
    unittest.main()
