"""Reading CI: the verdict on a commit, the kind of a failure, the relevant part of a log.

All pure (app/ci.py), so each rule is pinned down here without GitHub.
"""

from __future__ import annotations

from app.ci import (
    CheckRun,
    FailureKind,
    Snapshot,
    Status,
    Suite,
    Timing,
    Verdict,
    classify,
    excerpt,
    failing_tests,
    read_ci,
)

OWN = 99
ACTIONS = 15368


def suite(status: str = "completed", conclusion: str | None = "success", *, app_id: int = ACTIONS,
          runs: int = 1, suite_id: int = 1) -> Suite:
    return Suite(id=suite_id, app_id=app_id, app="github-actions", status=status,
                 conclusion=conclusion, check_runs=runs)


def check(name: str = "test", status: str = "completed", conclusion: str | None = "success", *,
          app_id: int = ACTIONS) -> CheckRun:
    return CheckRun(id=hash(name) % 1000, name=name, app_id=app_id, app="github-actions",
                    status=status, conclusion=conclusion)


def timing(*, now: float = 100.0, started: float = 0.0, last_event: float | None = 50.0,
           settle: float = 10.0, no_ci: float = 300.0) -> Timing:
    return Timing(now=now, started=started, last_event=last_event, settle=settle,
                  no_ci_timeout=no_ci)


def verdict(snapshot: Snapshot, when: Timing | None = None,
            required: tuple[str, ...] | list[str] = ()) -> Verdict:
    return read_ci(snapshot, when or timing(), own_app_id=OWN, required=required).verdict


def test_everything_completed_and_settled_is_green() -> None:
    reading = read_ci(Snapshot(suites=[suite()], runs=[check("lint"), check("test")]),
                      timing(), own_app_id=OWN)
    assert reading.verdict is Verdict.GREEN and reading.passed == ["lint", "test"]


def test_a_failed_check_is_red_once_everything_else_has_finished() -> None:
    runs = [check("lint", conclusion="failure"), check("test", status="in_progress",
                                                       conclusion=None)]
    assert verdict(Snapshot(suites=[suite("in_progress", None)], runs=runs)) is Verdict.PENDING
    runs[1] = check("test")
    reading = read_ci(Snapshot(suites=[suite(conclusion="failure")], runs=runs), timing(),
                      own_app_id=OWN)
    assert reading.verdict is Verdict.RED and reading.failing == ["lint"]


def test_the_settle_window_holds_the_verdict_after_the_last_webhook() -> None:
    green = Snapshot(suites=[suite()], runs=[check()])
    assert verdict(green, timing(now=100, last_event=95)) is Verdict.PENDING
    assert verdict(green, timing(now=100, last_event=90)) is Verdict.GREEN
    # No webhook seen at all (all of them lost): the API's answer stands.
    assert verdict(green, timing(last_event=None)) is Verdict.GREEN


def test_conductors_own_check_never_counts() -> None:
    own = Snapshot(suites=[suite("in_progress", None, app_id=OWN)],
                   runs=[check("Conductor", "in_progress", None, app_id=OWN)])
    assert verdict(own, timing(now=100)) is Verdict.PENDING  # nothing else yet: maybe CI comes
    assert verdict(own, timing(now=400)) is Verdict.NO_CI
    own_and_ci = Snapshot(suites=[*own.suites, suite()], runs=[*own.runs, check()])
    assert verdict(own_and_ci) is Verdict.GREEN


def test_no_ci_is_a_state_of_its_own_after_the_timeout() -> None:
    assert verdict(Snapshot(), timing(now=299)) is Verdict.PENDING
    assert verdict(Snapshot(), timing(now=301)) is Verdict.NO_CI


def test_an_app_that_never_runs_checks_stops_counting_after_the_timeout() -> None:
    idle = suite("queued", None, app_id=777, runs=0, suite_id=2)
    snapshot = Snapshot(suites=[suite(), idle], runs=[check()])
    assert verdict(snapshot, timing(now=100)) is Verdict.PENDING
    assert verdict(snapshot, timing(now=400)) is Verdict.GREEN


def test_statuses_count_by_their_latest_state() -> None:
    pending = Snapshot(statuses=[Status("ci/jenkins", "pending")])
    assert verdict(pending) is Verdict.PENDING
    assert verdict(Snapshot(statuses=[Status("ci/jenkins", "success")])) is Verdict.GREEN
    reading = read_ci(Snapshot(statuses=[Status("ci/jenkins", "error")]), timing(),
                      own_app_id=OWN)
    assert reading.verdict is Verdict.RED and reading.failing == ["ci/jenkins"]


def test_required_checks_must_report_and_pass() -> None:
    snapshot = Snapshot(suites=[suite()], runs=[check("test")])
    assert verdict(snapshot, required=["test"]) is Verdict.GREEN
    # A required check that has not reported: wait for it, then say it never came.
    assert verdict(snapshot, timing(now=100), required=["test", "deploy-preview"]) is (
        Verdict.PENDING)
    reading = read_ci(snapshot, timing(now=400), own_app_id=OWN,
                      required=["test", "deploy-preview"])
    assert reading.verdict is Verdict.MISSING and reading.waiting == ["deploy-preview"]


def test_failure_kinds() -> None:
    pytest_log = ("=================================== FAILURES ===\n"
                  "FAILED tests/test_ops.py::test_subtract - assert 8 == 2\n1 failed, 3 passed")
    assert classify(pytest_log) is FailureKind.TEST
    assert classify("src/app.py:12:5: F401 `os` imported but unused\nFound 1 error.") is (
        FailureKind.LINT)
    assert classify("app/x.py:3: error: Incompatible return value type\n"
                    "Found 1 error in 1 file") is FailureKind.LINT
    assert classify("  File \"app/x.py\", line 3\n    def f(\nSyntaxError: invalid syntax") is (
        FailureKind.BUILD)
    assert classify("error[E0308]: mismatched types") is FailureKind.BUILD


def test_infrastructure_and_flaky_failures_are_recognised() -> None:
    assert classify("##[error]The operation was canceled.") is FailureKind.INFRA
    assert classify("fatal: unable to access: Could not resolve host: github.com") is (
        FailureKind.INFRA)
    # Every test passed, and the job failed anyway.
    assert classify("....\n4 passed in 0.12s\n##[error]Process completed with exit code 1.") \
        is FailureKind.INFRA
    assert classify("", ["timed_out"]) is FailureKind.INFRA
    assert classify("") is FailureKind.INFRA
    # A failing test is a test failure even when the log mentions a network error.
    assert classify("FAILED tests/test_net.py::test_fetch - Connection refused") is (
        FailureKind.TEST)


def test_failing_test_names_are_found_in_pytest_go_and_tap_output() -> None:
    log = ("FAILED tests/test_a.py::test_one - assert 1 == 2\n"
           "ERROR tests/test_b.py::test_two\n--- FAIL: TestParse (0.00s)\n"
           "not ok 3 - parses dates\nFAILED tests/test_a.py::test_one - again\n")
    assert failing_tests(log) == ["tests/test_a.py::test_one", "tests/test_b.py::test_two",
                                  "TestParse", "parses dates"]


def test_the_excerpt_keeps_the_failure_and_the_summary_without_runner_noise() -> None:
    lines = ["2024-05-01T12:00:00.1234567Z ##[group]Set up job",
             *(f"2024-05-01T12:00:01.0000000Z collecting item {i}" for i in range(400)),
             "2024-05-01T12:00:02.0000000Z ##[endgroup]",
             "2024-05-01T12:00:03.0000000Z =================== FAILURES ===================",
             "2024-05-01T12:00:03.0000000Z >       assert subtract(5, 3) == 2",
             "2024-05-01T12:00:03.0000000Z FAILED tests/test_ops.py::test_subtract",
             "2024-05-01T12:00:04.0000000Z 1 failed, 399 passed in 2.0s"]
    text = excerpt("\n".join(lines), max_lines=20)
    assert "2024-05-01T" not in text and "##[group]" not in text
    assert "FAILURES" in text and text.endswith("1 failed, 399 passed in 2.0s")
    assert "collecting item 10\n" not in text  # the noise before the failure is cut
    assert len(text.splitlines()) <= 21


def test_a_workflow_that_failed_to_start_is_red_not_green() -> None:
    # An invalid workflow file: GitHub concludes the check suite `startup_failure` (or
    # `failure`) and creates no check run in it.
    for conclusion in ("startup_failure", "failure"):
        broken = Snapshot(suites=[suite(conclusion=conclusion, runs=0)])
        reading = read_ci(broken, timing(), own_app_id=OWN)
        assert reading.verdict is Verdict.RED, conclusion
        assert reading.failing == ["github-actions checks"]
        assert broken.failed_suites(OWN) == list(broken.suites)
    # A suite that concluded with check runs is judged by its runs, listed by name.
    fine = Snapshot(suites=[suite(conclusion="failure")],
                    runs=[check("lint", conclusion="failure")])
    assert read_ci(fine, timing(), own_app_id=OWN).failing == ["lint"]
    assert fine.failed_suites(OWN) == []
