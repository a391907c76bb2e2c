#!/usr/bin/env python3
"""HTTP fuzzer for pixd: malformed and random requests at a live server on loopback.

    test/fault/http_fuzz.py --port 3495 [--count 1500] [--seconds 60] [--seed N]
    (or, with no --port: starts its own cluster in /tmp/pgF1 on 5495 and pixd on 3495)

What it sends (bounded in count and time; loopback only):
  * random well-formed requests: methods (GET, DELETE, POST, HEAD, PUT, weird tokens), paths built from
    the API's words, random segments, percent-encodings (%00, %2F, overlong, invalid), dot segments,
    queries; random Accept and Accept-Encoding values (lists, parameters, quoted strings, bad q-values);
  * malformed requests: garbage request lines, bad versions, bare LF, NUL bytes, a 100 kB URI, a 1 MB
    header, 5 000 headers, bad header names, bad Content-Length, broken chunked bodies, a body over the
    64 kB limit;
  * slowloris: connections that send their headers one byte at a time;
  * clients that never read: connections pipelining hundreds of requests without reading a byte;
while checking that a normal client keeps being served.

Judged: every complete request is answered before its connection closes (a close without an answer is
a failure; malformed_requests names the few inputs that are not a complete request); no 5xx other than
503 (+ Retry-After); every error answer to a parsable request is
application/problem+json; the process is alive afterwards and /health answers 200; its exit on SIGTERM
is 0 when we started it. Prints a JSON summary and "N passed, N failed".
"""

import argparse
import json
import os
import random
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultlib  # noqa: E402

ALLOWED = {200, 201, 204, 400, 404, 405, 406, 410, 413, 414, 429, 431, 503, 501, 505}
WORDS = ["api", "pix", "stream", "start", "util", "msgs", "health", "metrics", "openapi.json", "32074986",
         "00000000", "1234567", "123456789", "abcdefghjk0123456789", "10000", "10001", "0", "-1", "1e3",
         "", ".", "..", "%2e%2e", "%2F", "%00", "%ff", "%", "%zz", "%c0%af", "%e2%80%ae", "é", "🙂"]
METHODS = ["GET", "GET", "GET", "DELETE", "POST", "HEAD", "PUT", "PATCH", "OPTIONS", "TRACE", "CONNECT",
           "get", "G\x01T", "X" * 300, "PRI", "M-SEARCH", "BREW"]
MEDIA = ["application/json", "multipart/json", "*/*", "application/*", "multipart/*", "text/html", "*",
         "application/problem+json", "json", "/", "a/b/c", "", " "]


def rand_path(rng):
    if rng.random() < 0.3:
        segs = ["api", "pix", rng.choice(["32074986", rng.choice(WORDS)]), "stream",
                rng.choice(["start", "abcdefghjk0123456789", rng.choice(WORDS),
                            "".join(rng.choice("0123456789abcdefghjkmnpqrstvwxyz") for _ in range(20))])]
    elif rng.random() < 0.3:
        segs = ["api", "util", "msgs", rng.choice(["32074986", rng.choice(WORDS)]),
                rng.choice(["1", "0", "10000", "10001", "99999999999", "+5", " 5", "5 ", "0x10", "1.0",
                            rng.choice(WORDS)])]
    else:
        segs = [rng.choice(WORDS) for _ in range(rng.randint(0, 8))]
    if rng.random() < 0.2:
        segs = ["%%%02X" % rng.randrange(256) + s for s in segs]
    path = "/" + "/".join(segs)
    if rng.random() < 0.1:
        path += "?" + "&".join(f"{rng.choice(WORDS)}={rng.choice(WORDS)}" for _ in range(rng.randint(1, 4)))
    if rng.random() < 0.05:
        path = path.replace("/", "//")
    # only what a request line can carry: no spaces, no controls
    return "".join(c if 0x20 < ord(c) < 0x7f else "%%%02X" % (ord(c) & 0xff) for c in path)


def rand_accept(rng):
    parts = []
    for _ in range(rng.randint(0, 6)):
        p = rng.choice(MEDIA)
        for _ in range(rng.randint(0, 2)):
            p += rng.choice([";q=0", ";q=1", ";q=0.5", ";q=1.001", ";q=abc", ";q=", ";charset=\"a,b;q=0\"",
                             ";level=1", " ; q = 0.3", ";q=0.0001", ";" + "x" * 50])
        parts.append(p)
    return rng.choice([",", ", ", " ,\t", ",,"]).join(parts)


def rand_encoding(rng):
    parts = [rng.choice(["gzip", "x-gzip", "deflate", "br", "*", "identity", "GZIP", "gzip;q=0", "*;q=0",
                         "gzip;q=0.0", "gzip;q=2", ""]) for _ in range(rng.randint(0, 4))]
    return ", ".join(parts)


def parse_response(data):
    """(status, headers dict lower-case) of the first response in data, or (None, {})."""
    head, sep, _ = data.partition(b"\r\n\r\n")
    if not sep and not data.startswith(b"HTTP/"):
        return None, {}
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0].split(b" ")[1])
    except (IndexError, ValueError):
        return None, {}
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower().decode("latin1")] = v.strip().decode("latin1")
    return status, headers


def exchange(port, data, timeout=6.0, read_all=False):
    """Sends data, returns what came back until close, first full response, or timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            pass  # the server may close early on garbage; read what it said
        chunks = []
        deadline = time.monotonic() + timeout
        s.settimeout(0.5)
        while time.monotonic() < deadline:
            try:
                c = s.recv(65536)
            except socket.timeout:
                if chunks and not read_all:
                    break
                continue
            except OSError:
                break
            if not c:
                break
            chunks.append(c)
            if not read_all and b"\r\n\r\n" in b"".join(chunks):
                head = b"".join(chunks)
                st, h = parse_response(head)
                cl = int(h.get("content-length", "0") or 0) if h.get("content-length", "0").isdigit() else 0
                if len(head.partition(b"\r\n\r\n")[2]) >= cl:
                    break
        return b"".join(chunks)


class Result:
    def __init__(self):
        self.lock = threading.Lock()
        self.sent = 0
        self.by_status = {}
        self.no_answer = 0
        self.bad = []

    def add(self, kind, req, data, parsable, must_answer=True):
        """must_answer: a complete request gets an answer before the connection closes ("never a
        dropped connection"); only an input that is not a complete HTTP/1.x request (see
        malformed_requests) may be closed silently."""
        st, h = parse_response(data)
        with self.lock:
            self.sent += 1
            key = str(st) if st is not None else "closed without answer"
            self.by_status[key] = self.by_status.get(key, 0) + 1
            if st is None:
                self.no_answer += 1
                if must_answer and len(self.bad) < 30:
                    self.bad.append(f"{kind}: closed without an answer for {req[:160]!r}")
                return
            problem = None
            if st >= 500 and st != 503:
                problem = f"{st}"
            elif st == 503 and "retry-after" not in h:
                problem = "503 without Retry-After"
            elif st not in ALLOWED:
                problem = f"unexpected status {st}"
            elif parsable and st >= 400 and st not in (413, 414, 431, 501, 505) and \
                    not h.get("content-type", "").startswith("application/problem+json"):
                problem = f"{st} with Content-Type {h.get('content-type')!r}"
            if problem and len(self.bad) < 30:
                self.bad.append(f"{kind}: {problem} for {req[:160]!r}")


def random_request(rng):
    method = rng.choice(METHODS)
    path = rand_path(rng)
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if rng.random() < 0.7:
        lines.append(f"Accept: {rand_accept(rng)}")
        if rng.random() < 0.2:
            lines.append(f"Accept: {rand_accept(rng)}")
    if rng.random() < 0.5:
        lines.append(f"Accept-Encoding: {rand_encoding(rng)}")
    body = b""
    if method == "POST" and rng.random() < 0.3:
        body = os.urandom(rng.randint(0, 2000))
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    parsable = all(0x20 < ord(c) < 0x7f for c in method) and len(method) < 100
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "replace") + body, parsable


TCHAR = set(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def malformed_requests(rng):
    """Requests as bytes, or (bytes, False) for an input that may go unanswered: only inputs that are
    not a complete HTTP/1.x request, where waiting for more (or closing) is right: blank lines with no request line, a chunked
    body cut short, the HTTP/2 preface, and random noise that could still be the start of a method (its
    first byte a token character). Everything else must get an answer before the close."""
    big = "x" * (1024 * 1024)
    yield b"\r\n\r\n", False  # RFC 9112 2.2: blank lines before a request line are ignored; none followed
    yield b"GARBAGE\r\n\r\n"
    yield b"GET\r\n\r\n"
    yield b"GET /health\r\n\r\n"
    yield b"GET /health HTTP/9.9\r\n\r\n"
    yield b"GET /health HTTP/1.1\nHost: x\n\n"
    yield b"GET /he\x00alth HTTP/1.1\r\nHost: x\r\n\r\n"
    yield b"GET /health HTTP/1.1\r\nHo\x00st: x\r\n\r\n"
    yield b"GET /health HTTP/1.1\r\n: empty-name\r\n\r\n"
    yield b"GET /health HTTP/1.1\r\nBad Header Name: x\r\n\r\n"
    yield b"GET /health HTTP/1.1\r\n folded: x\r\n\r\n"
    yield ("GET /" + "a" * 100_000 + " HTTP/1.1\r\nHost: x\r\n\r\n").encode()
    yield ("GET /health HTTP/1.1\r\nX-Big: " + big + "\r\n\r\n").encode()
    yield ("GET /api/pix/32074986/stream/start HTTP/1.1\r\nAccept: " + "application/json;q=0.1," * 20000 +
           "\r\n\r\n").encode()
    yield ("GET /health HTTP/1.1\r\n" + "".join(f"X-H{i}: {i}\r\n" for i in range(5000)) + "\r\n").encode()
    yield ("GET /health HTTP/1.1\r\n" + "Accept: */*\r\n" * 200 + "\r\n").encode()
    yield b"POST /api/util/msgs/32074986/1 HTTP/1.1\r\nContent-Length: -1\r\n\r\n"
    yield b"POST /api/util/msgs/32074986/1 HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"
    yield b"POST /api/util/msgs/32074986/1 HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"
    yield b"POST /api/util/msgs/32074986/1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n0\r\n\r\n"
    yield b"POST /api/util/msgs/32074986/1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFF\r\nx", False
    yield (b"POST /api/util/msgs/32074986/1 HTTP/1.1\r\nContent-Length: 200000\r\n\r\n" + b"x" * 200000)
    yield b"GET /health HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nHTTP2-Settings: AAAA\r\nConnection: Upgrade\r\n\r\n"
    yield b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(64), False
    yield b"GET http://evil.example/health HTTP/1.1\r\nHost: evil\r\n\r\n"
    yield b"GET * HTTP/1.1\r\nHost: x\r\n\r\n"
    yield b"GET /api/pix/32074986/stream/start HTTP/1.0\r\n\r\n"
    for _ in range(40):
        noise = os.urandom(rng.randint(1, 3000))
        yield noise, noise[0] not in TCHAR
    for _ in range(40):
        yield (b"GET /" + bytes(rng.randrange(256) for _ in range(rng.randint(1, 200))) + b" HTTP/1.1\r\n\r\n")


def slowloris(port, n, seconds, stop):
    socks = []
    for _ in range(n):
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        except OSError:
            pass
    req = b"GET /api/pix/32074986/stream/start HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n"
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline and not stop.is_set() and i < len(req):
        for s in socks:
            try:
                s.send(req[i:i + 1])
            except OSError:
                pass
        i += 1
        time.sleep(seconds / len(req))
    for s in socks:
        s.close()
    return len(socks)


def never_read(port, n, pipelined):
    socks = []
    one = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
    for _ in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(0.5)
            try:
                for _ in range(pipelined):
                    s.send(one)
            except OSError:
                pass  # our send buffer filled up: the server stopped reading us, as it should
            socks.append(s)
        except OSError:
            pass
    return socks


def health_latency(port, samples=10):
    worst = 0.0
    fails = 0
    for _ in range(samples):
        t0 = time.monotonic()
        try:
            st, _, _ = faultlib.http_get(port, "/health", timeout=5)
            if st != 200:
                fails += 1
        except OSError:
            fails += 1
        worst = max(worst, time.monotonic() - t0)
        time.sleep(0.1)
    return worst, fails


def fuzz(port, count=1500, seconds=60, seed=None, workers=8, pid_alive=lambda: True):
    seed = seed if seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    res = Result()
    t0 = time.monotonic()
    deadline = t0 + seconds
    checks = {}

    # 1. malformed
    for data in malformed_requests(rng):
        data, must_answer = data if isinstance(data, tuple) else (data, True)
        if time.monotonic() > deadline:
            break
        try:
            res.add("malformed", data[:160].decode("latin1"), exchange(port, data, timeout=4), False, must_answer)
        except OSError as e:
            with res.lock:
                res.sent += 1
                res.by_status["connect error"] = res.by_status.get("connect error", 0) + 1
                res.bad.append(f"malformed: connect error {e}")
    # 2. random well-formed, in parallel
    reqs = [random_request(random.Random(rng.random())) for _ in range(count)]
    idx = [0]
    ilock = threading.Lock()

    def worker():
        while time.monotonic() < deadline:
            with ilock:
                if idx[0] >= len(reqs):
                    return
                data, parsable = reqs[idx[0]]
                idx[0] += 1
            try:
                res.add("random", data.decode("utf-8", "replace"), exchange(port, data, timeout=6), parsable)
            except OSError as e:
                with res.lock:
                    res.sent += 1
                    res.by_status["connect error"] = res.by_status.get("connect error", 0) + 1
                    if len(res.bad) < 30:
                        res.bad.append(f"random: connect error {e}")

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, deadline - time.monotonic() + 10))
    # 3. slowloris and never-readers while a normal client is timed
    stop = threading.Event()
    box = {}
    lt = threading.Thread(target=lambda: box.update(n=slowloris(port, 50, 6, stop)), daemon=True)
    lt.start()
    sinks = never_read(port, 20, 400)
    time.sleep(0.5)
    worst, fails = health_latency(port, 15)
    lt.join(20)
    for s in sinks:
        s.close()
    checks["slowloris connections"] = box.get("n", 0)
    checks["never-read connections"] = len(sinks)
    checks["health worst latency under slow clients (s)"] = round(worst, 3)
    checks["health failures under slow clients"] = fails
    if fails or worst > 2.0:
        res.bad.append(f"a normal client suffered under slow clients: worst {worst:.3f}s, {fails} failures")
    # 4. alive and serving
    alive = pid_alive()
    try:
        st, _, _ = faultlib.http_get(port, "/health", timeout=5)
    except OSError:
        st = None
    checks["alive"] = alive
    checks["health after"] = st
    if not alive or st != 200:
        res.bad.append(f"after the fuzz: alive={alive} /health={st}")
    return {"seed": seed, "sent": res.sent, "seconds": round(time.monotonic() - t0, 1),
            "by_status": dict(sorted(res.by_status.items())), "closed_without_answer": res.no_answer,
            "checks": checks, "problems": res.bad}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int)
    ap.add_argument("--count", type=int, default=1500)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seed", type=int)
    a = ap.parse_args()
    pixd = None
    if a.port is None:
        faultlib.cluster_start()
        db = faultlib.create_database("fault_http_fuzz")
        pixd = faultlib.Pixd(db, name="pixd-http-fuzz").start()
        a.port = pixd.port
    try:
        out = fuzz(a.port, a.count, a.seconds, a.seed, pid_alive=(pixd.alive if pixd else (lambda: True)))
        if pixd:
            rc = pixd.stop()
            out["checks"]["exit status on SIGTERM"] = rc
            if rc != 0:
                out["problems"].append(f"pixd exited {rc} on SIGTERM (log {pixd.log_path})")
    finally:
        if pixd and pixd.alive():
            pixd.kill()
    print(json.dumps(out, indent=1))
    ok = not out["problems"]
    print(f"{int(ok)} passed, {int(not ok)} failed")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
