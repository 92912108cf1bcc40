"""A reconciliation timed for a lost subscription is never sent to the next master.

After a re-registration the batch system asks about its launched tasks only once the agents
had time to re-register with the new leader. If that subscription is lost too (the new leader
dies in turn), the question must not go to the master after it at once: it has not heard from
the agents yet and would answer TASK_LOST for tasks that run. Seen in the fault soak when two
leaders were killed ten seconds apart.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from scheduler_fakes import RecordingDriver, job, offer, running

from toil_mesos.mesos import SubscriptionState
from toil_mesos.scheduler.batch_system import MesosBatchSystem


class _Driver(RecordingDriver):
    """A recording driver whose subscription state the test sets."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.subscription_state = SubscriptionState.SUBSCRIBED


@pytest.fixture
def system() -> Iterator[MesosBatchSystem]:
    with running(driver=_Driver) as system:
        system.issueBatchJob("echo a", job("a", cores=0.5))
        driver = system._driver
        driver.scheduler.resourceOffers(driver, [offer("a7")])
        assert len(driver.launched()) == 1
        yield system


def test_losing_the_subscription_cancels_the_timed_reconciliation(
    system: MesosBatchSystem,
) -> None:
    driver = system._driver
    callbacks = driver.scheduler
    callbacks.reregistered(driver, {})
    timer = callbacks._reconcile_timer
    assert isinstance(timer, threading.Timer) and timer.is_alive()
    callbacks.disconnected(driver)
    timer.join(5)
    assert timer.finished.is_set() and not timer.is_alive()
    assert driver.reconciles() == []
    # The twin: had the timer run, the question would have gone out.
    callbacks._reconcile_launched(driver)
    assert len(driver.reconciles()) == 1


@pytest.mark.parametrize("state", [SubscriptionState.DISCONNECTED,
                                   SubscriptionState.SUBSCRIBING])
def test_a_reconciliation_due_while_not_subscribed_is_skipped(
    system: MesosBatchSystem, state: SubscriptionState
) -> None:
    driver = system._driver
    driver.subscription_state = state
    driver.scheduler._reconcile_launched(driver)
    assert driver.reconciles() == []
    driver.subscription_state = SubscriptionState.SUBSCRIBED
    driver.scheduler._reconcile_launched(driver)
    (tasks,) = driver.reconciles()
    assert [t["agent_id"] for t in tasks] == [{"value": "a7"}]

