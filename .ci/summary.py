"""Print one row per JUnit report nox wrote (the static contract, each anchor's whole suite,
each swept release): passed, failed, skipped, time, every skip's reason, and the figures
the serving tests record (load: answered, lost, latency; shutdown under load).

Exits 1 when no test ran at all, so CI cannot pass on an empty run.
"""

import re
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

REPORTS = Path(__file__).resolve().parent.parent / ".reports"
KINDS = {"contract": "contract", "vllm": "suite", "sweep": "sweep"}
FIGURES = ("load", "shutdown")  # test_e2e_server.py's record_property names


def _order(report: Path) -> tuple:
    kind, _, version = report.stem.partition("-")
    numbers = [int(n) for n in re.findall(r"\d+", version)]
    return (list(KINDS).index(kind) if kind in KINDS else len(KINDS), numbers)


def junit_counts(report: Path) -> tuple[int, int, int]:
    """(passed, failed, skipped) of a JUnit report; nox's sweep reads its own with this."""
    suite = _suite(report)
    tests, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
    failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    return tests - failed - skipped, failed, skipped


def _suite(report: Path) -> ET.Element:
    root = ET.parse(report).getroot()
    suite = root.find("testsuite") if root.tag == "testsuites" else root
    assert suite is not None, report
    return suite


def main() -> int:
    total = 0
    print(f"\n{'run':<18} {'passed':>7} {'failed':>7} {'skipped':>8} {'time':>9}")
    for report in sorted(REPORTS.glob("*.xml"), key=_order):
        kind, _, version = report.stem.partition("-")
        label = f"{KINDS.get(kind, kind)} {version}".strip()
        suite = _suite(report)
        passed, failed, skipped = junit_counts(report)
        total += passed + failed
        seconds = float(suite.get("time", 0))
        print(f"{label:<18} {passed:>7} {failed:>7} {skipped:>8} {seconds:>8.0f}s")
        reasons = Counter(
            s.get("message", "") for case in suite.iter("testcase") for s in case.iter("skipped")
        )
        for reason, count in sorted(reasons.items()):
            print(f"{'':<18} skipped x{count}: {reason}")
        for prop in suite.iter("property"):
            if prop.get("name") in FIGURES:
                print(f"{'':<18} {prop.get('name')}: {prop.get('value')}")
    if total == 0:
        print("no test ran", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
