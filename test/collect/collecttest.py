"""Helpers of pix-collect's suite: the program as a process, a producer that sends payments
through POST /api/pix/{ispb}/msgs and remembers what was acknowledged, and the checks of the end
state (the sink's pix_received, the server's queue). Every wait is bounded."""

import json
import os
import random
import signal
import subprocess
import threading
import time

import pixe2e
from pixe2e import psql

COLLECT = os.environ.get("PIX_COLLECT", os.path.join(pixe2e.ROOT, "collect", "pix-collect"))


class Collect:
    """One pix-collect process; its stderr goes to a log file of its own."""

    _n = 0

    def __init__(self, url, ispb, sink=None, exec_cmd=None, extra=(), collectors=6):
        Collect._n += 1
        self.args = [COLLECT, "--url", url, "--ispb", ispb, "--collectors", str(collectors)]
        self.args += ["--into", sink] if sink is not None else ["--exec", exec_cmd]
        self.args += list(extra)
        self.log_path = os.path.join(pixe2e.TMP, f"collect-{os.getpid()}-{Collect._n}.log")
        self.proc = None

    def start(self):
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is not None:
                self._log.close()

    def run(self, timeout=120):
        """Starts, waits (bounded); returns the exit status. A run past the bound is killed and fails."""
        self.start()
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"pix-collect still running after {timeout} s:\n{self.log()}")

    def kill(self, sig=signal.SIGKILL):
        """Sends sig and waits for the exit (bounded: past 30 s it is SIGKILLed and the test fails)."""
        try:
            if self.proc and self.proc.poll() is None:
                self.proc.send_signal(sig)
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(30)
                    raise AssertionError(f"pix-collect did not exit within 30 s of signal {sig}:\n{self.log()}")
        finally:
            if not self._log.closed:
                self._log.close()

    def wait_started(self, timeout=60):
        """Until the program says it collects (its sink is open: database, tables, slot locks, checkpoints);
        fails if it exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "collecting ISPB" in self.log(400):
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"pix-collect exited ({self.proc.returncode}) before it started:\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"pix-collect not started after {timeout} s:\n{self.log()}")

    def log(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return ""


def send_body(msgs):
    """The send route's body: the stream's format, valor as a JSON number."""
    return json.dumps([dict(m, valor=float(m["valor"])) for m in msgs]).encode()


class Producer(threading.Thread):
    """Sends `batches` POSTs of `size` payments from `payer` to `receiver`, each with its own
    endToEndIds, retrying a POST until it is acknowledged (201): the server deduplicates a resend of
    one whose answer was lost. `acked` is every endToEndId of a 201."""

    def __init__(self, port_of, payer, receiver, batches, size, pause=(0.0, 0.05), seed=1, headers=None):
        super().__init__(daemon=True)
        self.port_of = port_of  # a callable: the current pixd port (pixd is restarted on the same port)
        self.payer, self.receiver = payer, receiver
        self.batches, self.size, self.pause = batches, size, pause
        self.rng = random.Random(seed)
        self.headers = dict(headers or {})
        self.acked = []
        self.resends = 0
        self.error = None

    def run(self):
        client = pixe2e.Client(self.port_of(), timeout=15)
        try:
            for _ in range(self.batches):
                msgs = [pixe2e.make_message(self.receiver, rng=self.rng, pagador_ispb=self.payer)
                        for _ in range(self.size)]
                body = send_body(msgs)
                for attempt in range(600):
                    try:
                        r = client.post(f"/api/pix/{self.payer}/msgs", body=body,
                                        headers={"Content-Type": "application/json", **self.headers})
                        if r.status == 201:
                            break
                        if r.status not in (429, 503):
                            raise AssertionError(f"send: {r!r}")
                    except (OSError, ConnectionError, TimeoutError):
                        client.close()
                        client = pixe2e.Client(self.port_of(), timeout=15)
                    self.resends += 1
                    time.sleep(0.1)
                else:
                    raise AssertionError("a send was never acknowledged")
                self.acked += [m["endToEndId"] for m in msgs]
                time.sleep(self.rng.uniform(*self.pause))
        except BaseException as e:  # noqa: BLE001
            self.error = e
        finally:
            client.close()


def received(sink_db, base):
    """endToEndIds in the sink's pix_received, with their number of rows. Call it once pix-collect has
    started (Collect.wait_started) or exited: before, the table may not exist yet."""
    out = psql("SELECT end_to_end_id FROM pix_received", dbname=sink_db, base=base)
    return [line for line in out.splitlines() if line]


def received_if_any(sink_db, base):
    """As received, and [] when the sink's database or table does not exist (a run stopped before its
    sink was opened)."""
    if psql(f"SELECT count(*) FROM pg_database WHERE datname = '{sink_db}'", base=base).strip() != "1":
        return []
    if psql("SELECT to_regclass('pix_received') IS NULL", dbname=sink_db, base=base).strip() == "t":
        return []
    return received(sink_db, base)


def queue_state(db, ispb, base=None):
    """(ready, pending, open streams) of the server for ispb."""
    out = psql(f"""SELECT (SELECT count(*) FROM pix.ready WHERE ispb = '{ispb}'),
                          (SELECT coalesce(sum(cardinality(pending_ids)), 0) FROM pix.stream
                            WHERE ispb = '{ispb}' AND state = 'o'),
                          (SELECT count(*) FROM pix.stream WHERE ispb = '{ispb}' AND state = 'o')""",
               dbname=db, base=base)
    return tuple(int(x) for x in out.strip().split("|"))


def wait_until(pred, timeout, step=0.2, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(step)
    raise AssertionError(f"{what}: not reached in {timeout} s")


def register(db, *ispbs, base=None):
    """The institutions, known to the server (a send to an unknown receiver may be refused)."""
    for ispb in ispbs:
        psql(f"INSERT INTO pix.institution (ispb) VALUES ('{ispb}') ON CONFLICT DO NOTHING", dbname=db, base=base)
