"""Hostile load (issue 18): hundreds of anonymous clients against one pixd over TLS (--auth token)
while authenticated collectors of two institutions drain their queues. Run by security.py as the
test "hostile_load"; loopback only, a free port, every loop bounded (HOSTILE_SECONDS of attack).

The crowd, all without a valid credential, each kind from addresses of its own in 127.0.0.0/8:
  body holders  TLS, a GET with Content-Length 1000000 and 900 000 bytes of it, then silence;
                reconnect when closed (each holds up to ~1 MiB until pixd sheds or times it out)
  slowloris     TLS, a request head trickled a header line a second; reconnect when closed
  conn flood    plain TCP connections from ONE address, far beyond --max-connections-per-address
  /health flood keep-alive GET /health as fast as the client goes
  bogus tokens  GET .../stream/start with invented Bearer tokens, from a few addresses
  botnet        invented tokens from BOTNET_ADDRESSES addresses, THROTTLE_FREE_FAILURES each (never
                throttled): only the share of the queue kept for unknown credentials stops them
The collectors (two per institution, valid tokens, multipart/json, from 127.0.0.1) must drain every
message with no 503; pixd's RSS must stay under RSS_BUDGET_MB; the database must see at most a
bounded number of queries from the crowd: pix_health at most one a second, and the stream calls
beyond the collectors' own at most (THROTTLE_FREE_FAILURES + 1) per bogus-token address per minute
(the botnet's addresses included).

With PIX_HOSTILE_RESULTS=DIR the figures (results.json) and pixd's log are written there.
"""

import json
import os
import random
import socket
import ssl
import subprocess
import sys
import threading
import time
import http.client

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fault"))
import faultlib as fl  # noqa: E402

HOSTILE_SECONDS = 30
MESSAGES_PER_ISPB = 3000
BODY_HOLDERS = 300
SLOWLORIS = 100
CONN_FLOOD = 120
HEALTH_THREADS = 100
BOGUS_ADDRESSES = 4
BOTNET_ADDRESSES = 250
BOTNET_THREADS = 125
RSS_BUDGET_MB = 200  # baseline (~10 MiB) + --max-buffered-mb 64 + TLS and h2o per connection
THROTTLE_FREE_FAILURES = 5  # shim/throttle.h


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Crowd:
    def __init__(self, port, ctx, ispb, stop_at):
        self.port, self.ctx, self.ispb, self.stop_at = port, ctx, ispb, stop_at
        self.counts = {}
        self.lock = threading.Lock()

    def count(self, what):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def tls(self, source):
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=15, source_address=(source, 0))
        try:
            return self.ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        except (OSError, ssl.SSLError):
            raw.close()
            raise

    def hold(self, s, seconds):
        """Waits until the server closes s or the attack ends; True when the server closed it."""
        s.settimeout(1.0)
        end = min(self.stop_at, time.monotonic() + seconds)
        while time.monotonic() < end:
            try:
                if s.recv(4096) == b"":
                    return True
            except socket.timeout:
                continue
            except (OSError, ssl.SSLError):
                return True
        return False

    def body_holder(self, source):
        head = (f"GET /api/pix/{self.ispb}/stream/start HTTP/1.1\r\nHost: x\r\n"
                "Content-Length: 1000000\r\n\r\n").encode()
        while time.monotonic() < self.stop_at:
            try:
                with self.tls(source) as s:
                    s.sendall(head + b"x" * 900_000)
                    self.count("body_sent")
                    if self.hold(s, 60):
                        self.count("body_closed_by_pixd")
            except (OSError, ssl.SSLError):
                self.count("body_refused")
                time.sleep(0.2)

    def slowloris(self, source):
        while time.monotonic() < self.stop_at:
            try:
                with self.tls(source) as s:
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                    self.count("slow_started")
                    s.settimeout(1.0)
                    while time.monotonic() < self.stop_at:
                        s.sendall(b"X-Slow: 1\r\n")
                        try:
                            if s.recv(4096) == b"":
                                break
                        except socket.timeout:
                            continue
                    self.count("slow_closed_by_pixd")
            except (OSError, ssl.SSLError):
                self.count("slow_refused")
                time.sleep(0.2)

    def conn_flood(self, source):
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5, source_address=(source, 0))
        except OSError:
            self.count("flood_refused")
            return
        with s:
            if self.hold(s, HOSTILE_SECONDS):
                self.count("flood_closed_by_pixd")

    def health(self, source):
        while time.monotonic() < self.stop_at:
            c = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=15, context=self.ctx,
                                            source_address=(source, 0))
            try:
                while time.monotonic() < self.stop_at:
                    c.request("GET", "/health")
                    r = c.getresponse()
                    r.read()
                    self.count(f"health_{r.status}")
            except (OSError, http.client.HTTPException, ssl.SSLError):
                self.count("health_error")
            finally:
                c.close()

    def bogus(self, source):
        rng = random.Random(source)
        while time.monotonic() < self.stop_at:
            c = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=15, context=self.ctx,
                                            source_address=(source, 0))
            try:
                while time.monotonic() < self.stop_at:
                    token = "pix_" + "".join(rng.choice("0123456789abcdef") for _ in range(64))
                    c.request("GET", f"/api/pix/{self.ispb}/stream/start",
                              headers={"Authorization": f"Bearer {token}"})
                    r = c.getresponse()
                    r.read()
                    self.count(f"bogus_{r.status}")
            except (OSError, http.client.HTTPException, ssl.SSLError):
                self.count("bogus_error")
            finally:
                c.close()


    def botnet(self, sources):
        for source in sources:
            c = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30, context=self.ctx,
                                            source_address=(source, 0))
            try:
                for k in range(THROTTLE_FREE_FAILURES):
                    c.request("GET", f"/api/pix/{self.ispb}/stream/start",
                              headers={"Authorization": f"Bearer pix_{source.replace('.', '')}{k:060d}"})
                    r = c.getresponse()
                    r.read()
                    self.count(f"botnet_{r.status}")
            except (OSError, http.client.HTTPException, ssl.SSLError):
                self.count("botnet_error")
            finally:
                c.close()


class Collector(threading.Thread):
    """Drains one ISPB with a valid token until its share is read or the time is up."""

    def __init__(self, port, ctx, ispb, token, got, lock, deadline):
        super().__init__(daemon=True)
        self.port, self.ctx, self.ispb, self.token = port, ctx, ispb, token
        self.got, self.lock, self.deadline = got, lock, deadline
        self.statuses = {}
        self.requests = 0

    def run(self):
        c = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30, context=self.ctx)
        h = {"Authorization": f"Bearer {self.token}", "Accept": "multipart/json"}
        uri, empty = f"/api/pix/{self.ispb}/stream/start", 0
        while time.monotonic() < self.deadline and empty < 3:
            try:
                c.request("GET", uri, headers=h)
                r = c.getresponse()
                body = r.read()
            except (OSError, http.client.HTTPException):
                c.close()
                self.statuses["error"] = self.statuses.get("error", 0) + 1
                time.sleep(0.2)
                continue
            self.requests += 1
            self.statuses[r.status] = self.statuses.get(r.status, 0) + 1
            if r.status in (200, 204):
                uri = r.getheader("Pull-Next")
            if r.status == 200:
                ids = [m["endToEndId"] for m in json.loads(body)]
                with self.lock:
                    self.got.extend(ids)
                empty = 0
            elif r.status == 204:
                empty += 1
            else:
                time.sleep(0.5)
        if uri and not uri.endswith("/start"):
            try:
                c.request("DELETE", uri, headers=h)
                c.getresponse().read()
            except (OSError, http.client.HTTPException):
                pass
        c.close()


def metrics(port, ctx):
    c = http.client.HTTPSConnection("127.0.0.1", port, timeout=15, context=ctx)
    try:
        c.request("GET", "/metrics")
        body = c.getresponse().read().decode()
    finally:
        c.close()
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run(check, psql, db_conninfo, tmp):
    """The scenario; check(name, cond, detail) records each promise."""
    pki = os.path.join(tmp, "hostile-pki")
    subprocess.run(["rm", "-rf", pki], check=True)
    for args in (["ca", pki], ["server", pki]):
        subprocess.run([os.path.join(fl.ROOT, "scripts", "pki.sh"), *args], check=True,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    ctx = ssl.create_default_context(cafile=os.path.join(pki, "ca.crt"))
    a, b = "43000001", "43000002"
    tokens = {i: psql(f"SELECT pix_token_issue('{i}', 'hostile-{i}-{time.time_ns()}')").stdout.strip() for i in (a, b)}
    for i in (a, b):
        psql(f"SELECT pix_generate_messages('{i}', {MESSAGES_PER_ISPB})")
    port = free_port()
    pixd = fl.Pixd(db_conninfo, port=port, name="pixd-hostile",
                   extra=["--auth", "token", "--tls-cert", os.path.join(pki, "server.crt"), "--tls-key",
                          os.path.join(pki, "server.key"), "--max-queue", "64", "--max-connections", "2000"])
    pixd.start()
    try:
        _attack(check, pixd, port, ctx, a, b, tokens)
    finally:
        rc = pixd.stop()
        check("hostile: pixd exits 0 on SIGTERM after the attack", rc == 0, f"{rc}")


def _attack(check, pixd, port, ctx, a, b, tokens):
    m0 = metrics(port, ctx)
    rss0 = rss_mb(pixd.proc.pid)
    t0 = time.monotonic()
    stop_at = t0 + HOSTILE_SECONDS
    crowd = Crowd(port, ctx, a, stop_at)
    threading.stack_size(256 * 1024)
    threads = []
    for i in range(BODY_HOLDERS):
        threads.append(threading.Thread(target=crowd.body_holder, args=(f"127.0.1.{1 + i % 50}",), daemon=True))
    for i in range(SLOWLORIS):
        threads.append(threading.Thread(target=crowd.slowloris, args=(f"127.0.2.{1 + i % 50}",), daemon=True))
    for _ in range(CONN_FLOOD):
        threads.append(threading.Thread(target=crowd.conn_flood, args=("127.0.4.1",), daemon=True))
    for i in range(HEALTH_THREADS):
        threads.append(threading.Thread(target=crowd.health, args=(f"127.0.5.{1 + i % 50}",), daemon=True))
    for i in range(BOGUS_ADDRESSES):
        threads.append(threading.Thread(target=crowd.bogus, args=(f"127.0.3.{1 + i}",), daemon=True))
    for t in threads:
        t.start()
    time.sleep(3)  # the crowd is in place before the institutions start draining
    got, lock = [], threading.Lock()
    collectors = [Collector(port, ctx, i, tokens[i], got, lock, stop_at + 20) for i in (a, b) for _ in range(2)]
    for c in collectors:
        c.start()
    time.sleep(2)  # the collectors' credentials are known-good: now the botnet
    botnet = [f"127.0.6.{1 + i}" if i < 250 else f"127.0.7.{i - 249}" for i in range(BOTNET_ADDRESSES)]
    for i in range(BOTNET_THREADS):
        t = threading.Thread(target=crowd.botnet, args=(botnet[i::BOTNET_THREADS],), daemon=True)
        threads.append(t)
        t.start()
    rss_max, samples = rss0, []
    while time.monotonic() < stop_at:
        rss = rss_mb(pixd.proc.pid)
        rss_max = max(rss_max, rss)
        samples.append(round(rss, 1))
        time.sleep(0.5)
    m1 = metrics(port, ctx)  # before the collectors' tail: the crowd is still connected
    for t in threads:
        t.join(max(0.0, stop_at + 70 - time.monotonic()))
    for c in collectors:
        c.join(max(0.0, stop_at + 25 - time.monotonic()))
    elapsed = time.monotonic() - t0
    m2 = metrics(port, ctx)

    statuses = {}
    for c in collectors:
        for k, v in c.statuses.items():
            statuses[str(k)] = statuses.get(str(k), 0) + v
    delta = {k: m2.get(k, 0) - m0.get(k, 0) for k in m2 if k.startswith("pixd_db_calls_total")}
    starts = delta.get('pixd_db_calls_total{function="pix_stream_start"}', 0)
    health = delta.get('pixd_db_calls_total{function="pix_health"}', 0)
    anonymous_stream_calls = starts - len(collectors)
    stream_bound = (BOGUS_ADDRESSES * (THROTTLE_FREE_FAILURES + 1) * (int(elapsed // 60) + 1)
                    + BOTNET_ADDRESSES * THROTTLE_FREE_FAILURES)
    results = {
        "attack_seconds": HOSTILE_SECONDS, "elapsed_seconds": round(elapsed, 1),
        "crowd": {"body_holders": BODY_HOLDERS, "slowloris": SLOWLORIS, "connection_flood_one_address": CONN_FLOOD,
                  "health_threads": HEALTH_THREADS, "bogus_token_addresses": BOGUS_ADDRESSES,
                  "botnet_addresses": BOTNET_ADDRESSES},
        "crowd_outcomes": dict(sorted(crowd.counts.items())),
        "collectors": {"count": len(collectors), "statuses": statuses, "messages_expected": 2 * MESSAGES_PER_ISPB,
                       "messages_distinct": len(set(got)), "requests": sum(c.requests for c in collectors)},
        "rss_mb": {"before": round(rss0, 1), "max": round(rss_max, 1), "budget": RSS_BUDGET_MB, "samples": samples},
        "db_calls_delta": delta,
        "anonymous_queries": {"pix_health": health, "stream_calls_beyond_collectors": anonymous_stream_calls,
                              "stream_bound": stream_bound},
        "admission": {k: m2.get(k, 0) - m0.get(k, 0) for k in m2 if k.startswith("pixd_admission_refused_total")},
        "connections_during_attack": m1.get("pixd_connections"),
    }
    out = os.environ.get("PIX_HOSTILE_RESULTS")
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
    print(json.dumps({k: v for k, v in results.items() if k != "rss_mb"}, indent=1), flush=True)
    print(f"rss: before {rss0:.1f} MiB, max {rss_max:.1f} MiB", flush=True)

    check("hostile: the crowd ran (body holders sent, slowloris started, /health answered, bogus refused)",
          crowd.counts.get("body_sent", 0) >= BODY_HOLDERS and crowd.counts.get("slow_started", 0) >= 1
          and crowd.counts.get("health_200", 0) > 100 and crowd.counts.get("bogus_401", 0) >= 1,
          f"{crowd.counts}")
    check("hostile: no 503 (nor 5xx, nor error) to the authenticated collectors",
          all(not (k.startswith("5") or k == "error") for k in statuses), f"{statuses}")
    check("hostile: the collectors drained every message of both institutions",
          len(set(got)) == 2 * MESSAGES_PER_ISPB, f"{len(set(got))} of {2 * MESSAGES_PER_ISPB}")
    check(f"hostile: pixd's RSS stayed under {RSS_BUDGET_MB} MiB", rss_max <= RSS_BUDGET_MB,
          f"max {rss_max:.1f} MiB")
    check("hostile: /health cost at most one query a second", health <= elapsed + 2,
          f"{health} in {elapsed:.0f} s")
    check("hostile: bogus tokens cost a bounded number of queries", anonymous_stream_calls <= stream_bound,
          f"{anonymous_stream_calls} > {stream_bound}")
    check("hostile: connections beyond the per-address cap were refused",
          results["admission"].get('pixd_admission_refused_total{reason="per_address"}', 0) >= 1,
          f"{results['admission']}")
    check("hostile: body holders were shed or timed out", crowd.counts.get("body_closed_by_pixd", 0) >= 1,
          f"{crowd.counts}")
