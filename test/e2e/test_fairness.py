"""Fair shares between institutions, and what a co-tenant cannot learn or cost (issue 18).

- Reads in progress are capped per ISPB (--max-reads-per-ispb, 24): one institution's long polls
  cannot fill --max-parked, so another institution's start is served.
- A send quota per ISPB (a token bucket, --send-quota / --send-refill, on by default with
  authentication): 429 + Retry-After without a query once the bucket is empty, served again once it
  refilled; only calls the database accepted spend tokens.
- GET /metrics with authentication on shows the per-ISPB series only to an admin credential, and
  every variant passes `promtool check metrics`.
- A NOTIFY flood from a login with no pix privilege costs a bounded number of reads.
- The send route requires Content-Type: application/json (415 otherwise).

Servers listen on free loopback ports, with --auth token over plain HTTP (allowed on loopback).
"""

import json
import os
import re
import shutil
import subprocess
import threading
import time
import unittest

import pixe2e
from pixe2e import PixTestCase, Pixd, Client, new_ispb, psql

PROMTOOL = shutil.which("promtool")


def send_body(msgs):
    """The send route's JSON: valor as a JSON number."""
    return json.dumps([dict(m, valor=float(m["valor"])) for m in msgs]).encode()


def messages(payer, n, to):
    """n payments of payer to the institution to (registered: with authentication a payment goes to a
    registered institution only, PX014 / 422 otherwise)."""
    return [pixe2e.make_message(to, pagador_ispb=payer) for _ in range(n)]


def metric(text, name, labels=None):
    """The value of one sample of a Prometheus exposition (0 when absent)."""
    want = name + ("{" + labels + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


def wait_until(fn, timeout, what):
    deadline = time.monotonic() + timeout * pixe2e.SLOW
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"not reached within {timeout} s: {what}")


class FairCase(PixTestCase):
    """A server of its own with --auth token, and tokens for institutions and an admin."""

    EXTRA = ()

    def setUp(self):
        super().setUp()
        self.server = Pixd(pixe2e.conninfo(self.db), wait_ms=3000, extra=["--auth", "token", *self.EXTRA]).start()
        self.addCleanup(self.server.stop)
        self.to = new_ispb()  # the receiver of every payment sent: registered by its token
        self.token(self.to)

    def token(self, ispb=None):
        call = f"pix_token_issue('{ispb}', 'fairness')" if ispb else "pix_admin_token_issue('fairness')"
        return psql(f"SELECT {call}", dbname=self.db).strip()

    def call(self, method, path, token=None, body=None, headers=None, server=None, timeout=None):
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        if body is not None:
            h.setdefault("Content-Type", "application/json")
        c = Client((server or self.server).port, timeout=30)
        try:
            return c.request(method, path, headers=h, body=body, timeout=timeout)
        finally:
            c.close()

    def metrics(self, token=None, server=None):
        r = self.call("GET", "/metrics", token=token, server=server)
        self.assertEqual(r.status, 200, repr(r))
        return r.body.decode()


class TestReadShare(PixTestCase):
    """40 long polls of one institution (on its own stream id) do not make another's start 503.

    Before the per-ISPB cap, --max-parked 40 was filled by A's 40 polls and B's start got 503."""

    def test_one_institution_cannot_fill_the_reads_in_progress(self):
        a, b = new_ispb(), new_ispb()
        server = Pixd(pixe2e.conninfo(self.db), wait_ms=4000, extra=["--max-parked", "40"]).start()
        self.addCleanup(server.stop)
        first = self.collector(a, pixd=server)
        self.assertEqual(first.start().status, 204)
        uri = first.pull_next
        statuses = []

        def poll():
            c = Client(server.port, timeout=30)
            try:
                r = c.get(uri)
                statuses.append((r.status, r.header("Retry-After"), r.body))
            finally:
                c.close()

        threads = [threading.Thread(target=poll, daemon=True) for _ in range(40)]
        for t in threads:
            t.start()
        # every poll of A has arrived: parked, or already answered
        wait_until(lambda: metric(self.http_metrics(server), "pixd_reads_in_progress") + len(statuses) >= 40,
                   15, "A's 40 polls in progress or answered")
        r = self.collector(b, pixd=server).start()
        self.assertIn(r.status, (200, 204), f"B's start while A polls: {r!r}")
        for t in threads:
            t.join(30)
        self.assertEqual(len(statuses), 40)
        refused = [s for s in statuses if s[0] == 429]
        self.assertEqual(len(refused), 40 - 24, f"A's polls beyond its share of 24: {sorted(s[0] for s in statuses)}")
        for status, retry_after, body in refused:
            self.assertRegex(retry_after or "", r"^\d+$")
            self.assertEqual(json.loads(body)["status"], 429)
        self.assertEqual({s[0] for s in statuses} - {429}, {204}, "A's other polls waited and answered 204")

    def http_metrics(self, server):
        c = Client(server.port, timeout=10)
        try:
            return c.get("/metrics").body.decode()
        finally:
            c.close()


class TestSendQuota(FairCase):
    """A bucket of 5 tokens refilled at 2 a second (the defaults, 3 750 and 750, are ICOM's)."""

    EXTRA = ("--send-quota", "5", "--send-refill", "2")

    def send_calls(self):
        return metric(self.metrics(), "pixd_db_calls_total", 'function="pix_messages_send"')

    def test_empty_bucket_is_429_without_a_query_and_refills(self):
        a, b = new_ispb(), new_ispb()
        ta, tb = self.token(a), self.token(b)
        r = self.call("POST", f"/api/pix/{a}/msgs", ta, send_body(messages(a, 5, self.to)))
        self.assertEqual(r.status, 201, repr(r))
        calls = self.send_calls()
        r = self.call("POST", f"/api/pix/{a}/msgs", ta, send_body(messages(a, 1, self.to)))
        self.assertProblem(r, 429)
        self.assertGreaterEqual(self.assertRetryAfter(r), 1)
        self.assertEqual(self.send_calls(), calls, "a 429 of the quota costs no query")
        # B has its own bucket
        self.assertEqual(self.call("POST", f"/api/pix/{b}/msgs", tb, send_body(messages(b, 1, self.to))).status, 201)
        # A's bucket refills (2 a second): a send goes again
        again = wait_until(lambda: self.call("POST", f"/api/pix/{a}/msgs", ta, send_body(messages(a, 1, self.to))).status == 201,
                           15, "A's bucket refilled")
        self.assertTrue(again)

    def test_refused_calls_spend_nobody_s_tokens(self):
        a, b = new_ispb(), new_ispb()
        ta, tb = self.token(a), self.token(b)
        for _ in range(3):  # A, on B's route: 403, and B's bucket stays full
            r = self.call("POST", f"/api/pix/{b}/msgs", ta, send_body(messages(b, 5, self.to)))
            self.assertProblem(r, 403)
        r = self.call("POST", f"/api/pix/{b}/msgs", "pix_" + "0" * 64, send_body(messages(b, 5, self.to)))
        self.assertProblem(r, 401)
        bad = messages(b, 5, self.to)
        bad[4]["valor"] = "-1.00"
        self.assertProblem(self.call("POST", f"/api/pix/{b}/msgs", tb, send_body(bad)), 422)
        r = self.call("POST", f"/api/pix/{b}/msgs", tb, send_body(messages(b, 5, self.to)))
        self.assertEqual(r.status, 201, f"B's 5 tokens are all there: {r!r}")


class TestSendQuotaDefault(FairCase):
    """With authentication on and no option, ICOM's bucket: 3 750 messages, then 429."""

    def test_icom_bucket_by_default(self):
        a = new_ispb()
        ta = self.token(a)
        bodies = [send_body(messages(a, 1000, self.to)) for _ in range(12)]
        sent, t0 = 0, time.monotonic()
        for body in bodies:
            r = self.call("POST", f"/api/pix/{a}/msgs", ta, body)
            if r.status != 201:
                break
            sent += 1000
        elapsed = time.monotonic() - t0
        self.assertProblem(r, 429)
        self.assertRetryAfter(r)
        self.assertGreaterEqual(sent, 3750, "the bucket holds 3 750 tokens")
        # what it held, what came back at 750/s while sending, and the body that emptied it
        self.assertLessEqual(sent, 3750 + 750 * elapsed + 1000, f"{sent} messages in {elapsed:.2f} s")


class TestContentType(FairCase):
    EXTRA = ("--send-quota", "0")

    def test_send_requires_application_json(self):
        a = new_ispb()
        ta = self.token(a)
        body = send_body(messages(a, 1, self.to))
        for ct in (None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                   "application/jsonp", "application/json-patch+json"):
            h = {} if ct is None else {"Content-Type": ct}
            c = Client(self.server.port, timeout=30)
            self.addCleanup(c.close)
            r = c.request("POST", f"/api/pix/{a}/msgs", headers={"Authorization": f"Bearer {ta}", **h}, body=body)
            self.assertProblem(r, 415, f"Content-Type {ct!r}")
        for ct in ("application/json", "Application/JSON", "application/json; charset=utf-8",
                   "application/json;charset=UTF-8"):
            r = self.call("POST", f"/api/pix/{a}/msgs", ta, send_body(messages(a, 1, self.to)), headers={"Content-Type": ct})
            self.assertEqual(r.status, 201, f"Content-Type {ct!r}: {r!r}")


@unittest.skipUnless(PROMTOOL, "promtool (Debian package prometheus) is not installed")
class TestMetricsWall(FairCase):
    """Per-ISPB series only for an admin credential; every exposition passes promtool."""

    def promtool(self, text, what):
        out = subprocess.run([PROMTOOL, "check", "metrics"], input=text, text=True, capture_output=True, timeout=30)
        self.assertEqual(out.returncode, 0, f"promtool on {what}: {out.stdout}{out.stderr}")

    def test_per_ispb_series_only_for_an_admin(self):
        a = new_ispb()
        pixe2e.generate(self.db, a, 3)
        ta, admin = self.token(a), self.token()
        # the database's samples are refreshed every 5 s: wait until an admin sees a's
        text = wait_until(lambda: (lambda t: t if f'ispb="{a}"' in t else None)(self.metrics(admin)),
                          20, "per-ISPB series for the admin")
        self.promtool(text, "the admin's /metrics")
        for who, token in (("no credential", None), ("an institution", ta), ("an unknown token", "pix_" + "1" * 64)):
            text = self.metrics(token)
            self.assertFalse("ispb=" in text, f"{who} sees a per-ISPB label")
            self.assertFalse(re.search(r"(?m)^pix_", text), f"{who} sees the database's series")
            self.assertIn("pixd_requests_total", text)
            self.promtool(text, f"/metrics for {who}")
        h = {"Authorization": "Bearer x y"}
        self.assertFalse("ispb=" in self.call("GET", "/metrics", headers=h).body.decode(), "a malformed one")

    def test_without_authentication_every_series_passes_promtool(self):
        a = new_ispb()
        pixe2e.generate(self.db, a, 2)
        self.token(a)  # labels only for registered institutions (pix_metrics)
        open_server = Pixd(pixe2e.conninfo(self.db), wait_ms=1000).start()
        self.addCleanup(open_server.stop)
        text = wait_until(lambda: (lambda t: t if f'ispb="{a}"' in t else None)(self.metrics(server=open_server)),
                          20, "per-ISPB series with --auth none")
        self.promtool(text, "/metrics with --auth none")
        families = re.findall(r"(?m)^# TYPE (\S+)", text)
        self.assertEqual(len(families), len(set(families)), "each family once")


class TestNotifyFlood(PixTestCase):
    """A login with no pix privilege NOTIFYs pix_message for an ISPB with 6 parked collectors, 3 000
    times as fast as it can: each parked read queries at most once per 10 ms of the flood (bound
    checked with a generous margin), where before it queried again as soon as its query came back."""

    def test_flood_costs_a_bounded_number_of_reads(self):
        x = new_ispb()
        role = f"nopriv_{x}"
        psql(f"CREATE ROLE {role} LOGIN; GRANT CONNECT ON DATABASE {self.db} TO {role}", dbname=self.db)
        self.addCleanup(psql, f"DROP ROLE IF EXISTS {role}", dbname=self.db, check=False)
        server = Pixd(pixe2e.conninfo(self.db), wait_ms=8000).start()
        self.addCleanup(server.stop)
        statuses = []

        def collect():
            c = pixe2e.Collector(server, x)
            try:
                statuses.append(c.start().status)
            finally:
                c.close()

        threads = [threading.Thread(target=collect, daemon=True) for _ in range(6)]
        for t in threads:
            t.start()
        http = server.client()
        self.addCleanup(http.close)

        def reads():
            return metric(http.get("/metrics").body.decode(), "pixd_db_calls_total", 'function="pix_stream_next"')

        wait_until(lambda: metric(http.get("/metrics").body.decode(), "pixd_reads_parked") == 6, 15, "6 parked")
        before = reads()
        t0 = time.monotonic()
        flood = "".join(f"NOTIFY pix_message, '{x}';\n" for _ in range(3000))
        out = subprocess.run([os.path.join(pixe2e.PGBIN, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                              pixe2e.conninfo(self.db) + f" user={role}"],
                             input=flood, text=True, capture_output=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr)
        time.sleep(0.2)  # the last wakes
        elapsed_ms = (time.monotonic() - t0) * 1000
        cost = reads() - before
        bound = 6 * (elapsed_ms / 10 + 3)
        pixe2e.log(f"\n    3000 NOTIFY in {elapsed_ms:.0f} ms cost {cost:.0f} reads (bound {bound:.0f})")
        self.assertGreater(cost, 0, "the flood did wake the parked reads")
        self.assertLessEqual(cost, bound, "reads per parked collector bounded by one per 10 ms")
        for t in threads:
            t.join(20)
        self.assertEqual(statuses, [204] * 6, "the collectors were answered as usual")


if __name__ == "__main__":
    unittest.main()
