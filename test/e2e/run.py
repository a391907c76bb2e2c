#!/usr/bin/env python3
"""Runs the end-to-end suite: python3 test/e2e/run.py [-k PATTERN ...] [-q] [-x]

Against the PostgreSQL named by PIX_PG (see pixe2e.py), or a throw-away cluster of its own.
Prints unittest's report and, last, a line "N passed, N failed".
"""

import argparse
import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import pixe2e  # noqa: E402


class Result(unittest.TextTestResult):
    def startTest(self, test):
        self._t0 = time.monotonic()
        super().startTest(test)

    def stopTest(self, test):
        super().stopTest(test)
        if self.showAll:
            self.stream.writeln(f"    ({time.monotonic() - self._t0:.1f} s)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", action="append", default=[], help="only tests matching this substring (repeatable)")
    ap.add_argument("-q", action="store_true", help="less output")
    ap.add_argument("-x", action="store_true", help="stop at the first failure")
    args = ap.parse_args()

    if not os.access(pixe2e.PIXD, os.X_OK):
        print(f"{pixe2e.PIXD} is not built")
        print("0 passed, 1 failed")
        return 1
    pixe2e.log(f"pixd: {pixe2e.PIXD}{' under ' + ' '.join(pixe2e.WRAPPER) if pixe2e.WRAPPER else ''}")
    pixe2e.log(f"PostgreSQL: {pixe2e.base_conninfo()}; logs in {pixe2e.TMP}")

    loader = unittest.TestLoader()
    if args.k:
        loader.testNamePatterns = [f"*{k}*" for k in args.k]
    suite = loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)
    runner = unittest.TextTestRunner(verbosity=1 if args.q else 2, failfast=args.x, resultclass=Result,
                                     stream=sys.stdout)
    t0 = time.monotonic()
    result = runner.run(suite)
    # a test counts once however many of its subtests failed; a failing setUpClass counts as one
    failed_ids = set()
    for test, _ in result.failures + result.errors:
        failed_ids.add(getattr(test, "test_case", test).id())
    for test in result.unexpectedSuccesses:
        failed_ids.add(test.id())
    run_failed = len([t for t in failed_ids if "setUpClass" not in t and "tearDownClass" not in t])
    passed = result.testsRun - run_failed - len(result.skipped)
    failed = len(failed_ids)

    pixe2e.shutdown_shared()
    if pixe2e.BAD_EXITS:
        print(f"\n{len(pixe2e.BAD_EXITS)} pixd process(es) did not exit 0 on SIGTERM:")
        for b in pixe2e.BAD_EXITS:
            print(b)
        failed += 1
    print(f"end-to-end: {time.monotonic() - t0:.0f} s, {len(result.skipped)} skipped, logs in {pixe2e.TMP}")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
