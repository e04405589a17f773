"""Fixtures for end-to-end tests: the whole stack per test, its logs printed when a test fails.

``stack`` is a running :class:`~tests.emulators.harness.Stack` with the defaults;
``make_stack(**options)`` builds one with other options (``workers``, ``job_timeout``,
``files``, ``ci_mode``, ``script``, ...). Each lives under the test's ``tmp_path``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.emulators.harness import Stack

REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    return report


@pytest.fixture
def make_stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def make(**options: Any) -> Stack:
        stack = Stack(tmp_path / f"stack-{len(stacks)}", **options)
        stacks.append(stack)
        return stack.start()

    yield make
    reports = request.node.stash.get(REPORTS, {})
    failed = any(report.failed for report in reports.values())
    for stack in stacks:
        if failed:
            print(f"\n===== {stack.workdir.name}: what the stack saw =====")
            print(stack.diagnostics(lines=60))
        stack.stop()


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack()
