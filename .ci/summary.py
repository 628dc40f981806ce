"""Print one row per vLLM line from the JUnit reports nox wrote: passed, failed, skipped, time.

Exits 1 when no test ran at all, so CI cannot pass on an empty run.
"""

import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

REPORTS = Path(__file__).resolve().parent.parent / ".reports"


def main() -> int:
    total = 0
    print(f"\n{'vLLM line':<12} {'passed':>7} {'failed':>7} {'skipped':>8} {'time':>9}")
    reports = REPORTS.glob("vllm-*.xml")
    for report in sorted(reports, key=lambda r: [int(n) for n in r.stem[5:].split(".")]):
        line = report.stem.removeprefix("vllm-")
        suite = ET.parse(report).getroot()
        suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
        assert suite is not None, report
        tests = int(suite.get("tests", 0))
        failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped = int(suite.get("skipped", 0))
        total += tests - skipped
        seconds = float(suite.get("time", 0))
        print(f"{line:<12} {tests - failed - skipped:>7} {failed:>7} {skipped:>8} {seconds:>8.0f}s")
        reasons = Counter(
            s.get("message", "") for case in suite.iter("testcase") for s in case.iter("skipped")
        )
        for reason, count in sorted(reasons.items()):
            print(f"{'':<12} skipped x{count}: {reason}")
    if total == 0:
        print("no test ran", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
