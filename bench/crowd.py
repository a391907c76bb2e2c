#!/usr/bin/env python3
"""Crowd measurements of pixd over raw sockets (standard library only).

  bench/crowd.py departed --pg CONNINFO [--pixd PATH] [-n 3000]
      N polls park (start on N/6 ISPBs x 6), then every client closes its socket. Reports how many
      pix_stream_next calls the database ran after the close (pg_stat_user_functions,
      track_functions = 'all', read after the wait plus a stats flush), and how long the server kept
      the departed polls (pixd_reads_parked back to 0, when pixd reports it).
  bench/crowd.py burst --pg CONNINFO [--pixd PATH] [-n 3000] [--pixd-args "..."]
      N starts sent as fast as one thread can (about a second or less), the answers counted by status,
      and the Retry-After values of the 503s.

CONNINFO: a superuser conninfo without dbname (a database pix_crowd is made in it with the extension
the server's PostgreSQL has). Ports: --port (HTTP, default 3660). Output: a Markdown table row.
"""

import argparse
import os
import re
import sys
import time
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "test", "e2e"))

import pixe2e  # noqa: E402
from test_crowd import RawPolls, metrics, raise_fd_limit, start_paths  # noqa: E402


def function_calls(db, base):
    out = pixe2e.psql("SELECT funcname, calls FROM pg_stat_user_functions WHERE funcname LIKE 'pix_stream_%'",
                      dbname=db, base=base)
    return {k: int(v) for k, v in (line.split("|") for line in out.splitlines() if line)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["departed", "burst"])
    ap.add_argument("--pg", required=True)
    ap.add_argument("--pixd", default=pixe2e.PIXD)
    ap.add_argument("-n", type=int, default=3000)
    ap.add_argument("--port", type=int, default=3660)
    ap.add_argument("--wait-ms", type=int, default=8000)
    ap.add_argument("--pixd-args", default="")
    a = ap.parse_args()
    pixe2e.PIXD = a.pixd
    raise_fd_limit(a.n + 500)
    db = "pix_crowd"
    pixe2e.create_database(db, {"track_functions": "all"}, base=a.pg)
    px = pixe2e.Pixd(f"{a.pg} dbname={db}", wait_ms=a.wait_ms, port=a.port,
                     extra=["--no-access-log"] + a.pixd_args.split())
    px.args[0] = a.pixd
    px.start()
    try:
        ispbs = ["%08d" % (77000000 + i) for i in range((a.n + 5) // 6)]
        paths = start_paths(ispbs, 6)[: a.n]
        if a.mode == "departed":
            polls = RawPolls(px.port, paths)
            deadline = time.monotonic() + 120
            while metrics(px)["pixd_reads_parked"] < a.n and time.monotonic() < deadline:
                time.sleep(0.2)
            parked = int(metrics(px)["pixd_reads_parked"])
            print(f"parked {parked} after {120 - (deadline - time.monotonic()):.1f} s", file=sys.stderr)
            time.sleep(1.5)  # stats of the first reads flushed
            before = function_calls(db, a.pg)
            t_close = time.monotonic()
            polls.close()
            freed = None
            while time.monotonic() < t_close + a.wait_ms / 1000 + 3:
                if freed is None and metrics(px).get("pixd_reads_in_progress", 1) == 0:
                    freed = time.monotonic() - t_close
                time.sleep(0.1)
            time.sleep(11)  # idle backends flush their function statistics within 10 s
            after = function_calls(db, a.pg)
            delta = {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(after) | set(before))}
            # Every start ran before the close (each poll parked after it); their statistics may
            # be flushed after "before": only the reads made on a poll's behalf afterwards count.
            print(f"| {a.pixd} {a.pixd_args} | {parked} of {a.n} | {delta.get('pix_stream_next', 0)} "
                  f"| {'%.1f s' % freed if freed is not None else 'at the deadline (%d ms)' % a.wait_ms} |")
        else:
            t0 = time.monotonic()
            polls = RawPolls(px.port, paths)
            sent = time.monotonic() - t0
            answers = polls.statuses(120)
            polls.close()
            st = Counter(s for s, _ in answers)
            ra = Counter(r for s, r in answers if s == 503)
            print(f"| {a.pixd} {a.pixd_args} | {a.n} in {sent:.2f} s | "
                  f"{', '.join(f'{k}: {v}' for k, v in sorted(st.items()))} | "
                  f"{', '.join(f'{k} s: {v}' for k, v in sorted(ra.items())) or '-'} |")
    finally:
        px.stop()
        pixe2e.drop_database(db, base=a.pg)


if __name__ == "__main__":
    main()
