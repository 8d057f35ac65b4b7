"""The fault-injection suite: each test is one real fault on real files. It asserts the clear message (naming
the file or key and the fix), that every other output is intact, and that a rerun completes.

`pytest tests/faults` ends with a table of every case and its outcome (the first line of each test's
docstring says what the fault is)."""

from __future__ import annotations

import pytest

_OUTCOMES: list[tuple[str, str, str]] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        doc = (getattr(item.obj, "__doc__", None) or item.name).strip().splitlines()[0]
        _OUTCOMES.append((item.nodeid.split("::")[0].rsplit("/", 1)[-1], doc, report.outcome))


def pytest_terminal_summary(terminalreporter):
    if not _OUTCOMES:
        return
    tr = terminalreporter
    tr.section(f"fault-injection cases: {len(_OUTCOMES)}")
    width = max(len(doc) for _, doc, _ in _OUTCOMES)
    for module, doc, outcome in sorted(_OUTCOMES):
        tr.write_line(f"{outcome:<8} {doc:<{width}}  [{module}]")
    counts = {o: sum(1 for *_, x in _OUTCOMES if x == o) for o in ("passed", "failed", "skipped")}
    tr.write_line(", ".join(f"{n} {o}" for o, n in counts.items() if n))
