"""When the payment retry tries a pending payment again (ledger/retry_schedule.py): soon after a failure, then twice
as long each time it stays pending, never longer apart than the retry's interval."""

from __future__ import annotations

from xsc.ledger.retry_schedule import FIRST, RetrySchedule

A, B = b"a" * 32, b"b" * 32


def test_a_payment_that_keeps_failing_waits_twice_as_long_each_time_up_to_the_interval() -> None:
    schedule = RetrySchedule(most=30.0)
    waits = []
    now = 0.0
    for _ in range(8):
        tried = schedule.failed(A, "unreachable", now)
        waits.append(tried.due - now)
        assert not schedule.due(A, now) and schedule.due(A, tried.due)
        now = tried.due
    assert waits == [FIRST, 2 * FIRST, 4 * FIRST, 8 * FIRST, 16 * FIRST, 30.0, 30.0, 30.0]
    assert schedule.of(A)["tries"] == 8 and schedule.of(A)["error"] == "unreachable"


def test_a_payment_never_failed_is_due_at_once_and_one_ended_is_forgotten() -> None:
    schedule = RetrySchedule(most=30.0)
    assert schedule.due(A, 0.0) and schedule.of(A) is None and schedule.wait(0.0) == 30.0
    schedule.failed(A, "x" * 1000, 0.0)
    schedule.failed(B, "refused", 0.0)
    assert len(schedule.of(A)["error"]) == 300  # a payee's words are bounded before they are kept
    assert schedule.wait(0.0) == FIRST and schedule.wait(5.0) == 0.0
    schedule.ended(A)
    schedule.keep_only(set())  # B no longer pending (a start, a drop): forgotten
    assert schedule.of(A) is None and schedule.of(B) is None and schedule.wait(0.0) == 30.0


def test_an_interval_shorter_than_the_first_wait_bounds_it() -> None:
    schedule = RetrySchedule(most=0.3)
    assert schedule.failed(A, "unreachable", 0.0).due == 0.3


def test_a_try_come_due_while_its_owner_works_on_it_is_put_off_one_wait_not_counted() -> None:
    schedule = RetrySchedule(most=30.0)
    schedule.failed(A, "unreachable", 0.0)
    schedule.failed(A, "unreachable", 1.0)  # due at 3.0, two seconds on
    schedule.put_off(A, 3.0)
    assert not schedule.due(A, 4.9) and schedule.due(A, 5.0) and schedule.of(A)["tries"] == 2
    schedule.put_off(B, 3.0)  # never failed: nothing to put off
    assert schedule.of(B) is None
