#!/usr/bin/env python3
"""Runs the end-to-end suite: python3 test/e2e/run.py [-k PATTERN ...] [-q] [-x]

Against the PostgreSQL named by PIX_PG (see pixe2e.py), or a throw-away cluster of its own.
Prints unittest's report and, last, a line "N passed, N failed, N skipped".
Counting: a test counts once however many of its subtests failed; a failing setUpClass/tearDownClass counts
one failure; a skipped test counts as skipped (not passed); an @expectedFailure that fails counts as FAILED (it is
a promise of SPEC.md the code does not keep; its docstring says which) and one that passes unexpectedly as failed
too (drop the decorator). A -k pattern that selects no test is a failure (a typo must not pass), and so is a run
that selects no test at all.
"""

import argparse
import fnmatch
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


def iter_tests(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from iter_tests(t)
        else:
            yield t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", action="append", default=[], help="only tests matching this substring (repeatable)")
    ap.add_argument("-q", action="store_true", help="less output")
    ap.add_argument("-x", action="store_true", help="stop at the first failure")
    args = ap.parse_args()

    if not os.access(pixe2e.PIXD, os.X_OK):
        print(f"{pixe2e.PIXD} is not built")
        print("0 passed, 1 failed, 0 skipped")
        return 1
    pixe2e.log(f"pixd: {pixe2e.PIXD}{' under ' + ' '.join(pixe2e.WRAPPER) if pixe2e.WRAPPER else ''}")
    pixe2e.log(f"PostgreSQL: {pixe2e.base_conninfo()}; logs in {pixe2e.TMP}")

    loader = unittest.TestLoader()
    if args.k:
        loader.testNamePatterns = [f"*{k}*" for k in args.k]
    suite = loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)
    # Every pattern must select at least one test (unittest matches "*k*" against module.Class.method).
    ids = [t.id() for t in iter_tests(suite)]
    empty = [k for k in args.k if not any(fnmatch.fnmatchcase(i, f"*{k}*") for i in ids)]
    if empty or not ids:
        print(f"no test selected by {', '.join(repr(k) for k in empty) if empty else 'this run'}")
        pixe2e.shutdown_shared()
        print("0 passed, 1 failed, 0 skipped")
        return 1
    runner = unittest.TextTestRunner(verbosity=1 if args.q else 2, failfast=args.x, resultclass=Result,
                                     stream=sys.stdout)
    t0 = time.monotonic()
    result = runner.run(suite)
    # a test counts once however many of its subtests failed; a failing setUpClass counts as one
    failed_ids = set()
    for test, _ in result.failures + result.errors:
        failed_ids.add(getattr(test, "test_case", test).id())
    for test in result.unexpectedSuccesses:
        print(f"UNEXPECTED SUCCESS (drop its @expectedFailure): {test.id()}")
        failed_ids.add(test.id())
    for test, _ in result.expectedFailures:
        print(f"EXPECTED FAILURE (a known deviation, counted as failed): {test.id()}")
        failed_ids.add(getattr(test, "test_case", test).id())
    skipped_ids = {t.id() for t, _ in result.skipped} - failed_ids
    run_failed = len([t for t in failed_ids if "setUpClass" not in t and "tearDownClass" not in t])
    passed = result.testsRun - run_failed - len(skipped_ids)
    failed = len(failed_ids)
    pixe2e.shutdown_shared()
    if pixe2e.BAD_EXITS:
        print(f"\n{len(pixe2e.BAD_EXITS)} pixd process(es) did not exit 0 on SIGTERM:")
        for b in pixe2e.BAD_EXITS:
            print(b)
        failed += 1
    print(f"end-to-end: {time.monotonic() - t0:.0f} s, logs in {pixe2e.TMP}")
    print(f"{passed} passed, {failed} failed, {len(skipped_ids)} skipped")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
