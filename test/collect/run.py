#!/usr/bin/env python3
"""pix-collect's end-to-end suite: python3 test/collect/run.py [-k PATTERN ...] [-x]

Real PostgreSQL (the server's and the sink's), real shim/pixd, real sockets: the helpers of
test/e2e/pixe2e.py. PIX_PG names a running PostgreSQL with the extension installed (test/run-all.sh
sets it); without it the suite starts a throw-away cluster of its own. PIX_COLLECT is the program
(default collect/pix-collect of this tree). Ends with a line "N passed, N failed".
"""

import argparse
import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))

import pixe2e  # noqa: E402
import collecttest  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", action="append", default=[], help="only tests matching this substring (repeatable)")
    ap.add_argument("-x", action="store_true", help="stop at the first failure")
    args = ap.parse_args()
    for prog in (pixe2e.PIXD, collecttest.COLLECT):
        if not os.access(prog, os.X_OK):
            print(f"{prog} is not built")
            print("0 passed, 1 failed")
            return 1
    pixe2e.log(f"pix-collect: {collecttest.COLLECT}; pixd: {pixe2e.PIXD}")
    pixe2e.log(f"PostgreSQL: {pixe2e.base_conninfo()}; logs in {pixe2e.TMP}")
    loader = unittest.TestLoader()
    if args.k:
        loader.testNamePatterns = [f"*{k}*" for k in args.k]
    suite = loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)
    t0 = time.monotonic()
    result = unittest.TextTestRunner(verbosity=2, failfast=args.x, stream=sys.stdout).run(suite)
    failed = {getattr(t, "test_case", t).id() for t, _ in result.failures + result.errors}
    passed = result.testsRun - len(failed) - len(result.skipped)
    pixe2e.shutdown_shared()
    if pixe2e.BAD_EXITS:
        print(f"\n{len(pixe2e.BAD_EXITS)} pixd process(es) did not exit 0 on SIGTERM:")
        for b in pixe2e.BAD_EXITS:
            print(b)
        failed.add("pixd exits")
    print(f"pix-collect suite: {time.monotonic() - t0:.0f} s, logs in {pixe2e.TMP}")
    print(f"{max(passed, 0)} passed, {len(failed)} failed")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
