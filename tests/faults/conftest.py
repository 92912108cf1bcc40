"""The faults run's tally: what the tests did to the system, printed as one line at the end.

Each test that injects a fault, tries a bad input, or checks for lost jobs and leftovers counts
it on the session's :class:`FaultTally` (the ``tally`` fixture) as it does it, so the line
reports what happened in this run, not what the tests were meant to do::

    faults: injected 12; bad inputs tried 97; jobs lost 0; leftovers 0
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

_TALLY = pytest.StashKey["FaultTally"]()


@dataclass
class FaultTally:
    """Counts for the summary line; the tests add to them as they go."""

    injected: int = 0
    bad_inputs: int = 0
    jobs_lost: int = 0
    leftovers: int = 0
    #: Jobs and leftover checks made: "jobs lost 0" means something only if jobs were checked.
    jobs_checked: int = 0
    leftover_checks: int = 0

    def fault(self, count: int = 1) -> None:
        self.injected += count

    def bad_input(self, count: int = 1) -> None:
        self.bad_inputs += count

    def jobs(self, *, checked: int, lost: int) -> None:
        self.jobs_checked += checked
        self.jobs_lost += lost

    def leftovers_found(self, found: int) -> None:
        self.leftover_checks += 1
        self.leftovers += found

    def line(self) -> str:
        return (f"faults: injected {self.injected}; bad inputs tried {self.bad_inputs}; "
                f"jobs lost {self.jobs_lost}; leftovers {self.leftovers}")


@pytest.fixture(scope="session")
def tally(request: pytest.FixtureRequest) -> FaultTally:
    """The session's tally (one per run, shared by every faults test)."""
    stash = request.config.stash
    if _TALLY not in stash:
        stash[_TALLY] = FaultTally()
    return stash[_TALLY]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    found = terminalreporter.config.stash.get(_TALLY, None)
    if found is None:  # no faults test ran
        return
    terminalreporter.write_sep("-", "faults summary")
    terminalreporter.write_line(found.line())
    terminalreporter.write_line(f"(jobs checked {found.jobs_checked}; "
                                f"leftover checks {found.leftover_checks})")
