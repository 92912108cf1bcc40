"""Shared pieces of the fault tests: a recording workflow, fault injection, and leftover checks.

Every job of :data:`WORKFLOW` records each *attempt* in a directory the agents share with the
test (``records/attempts/<index>.log``, one JSON line per event) and holds an exclusive
``flock`` on ``records/locks/<index>`` while it runs. The kernel releases a flock when its
holder dies, however it dies, so a second attempt that finds the lock taken proves two attempts
of one job ran at the same time: the attempt records ``"overlap": true``. That catches what
start and end times alone cannot, e.g. an attempt SIGKILLed before it could record its end.

Faults touch only what the cluster started: executors are children of an agent's pid, links
are the cluster's own bridge ports in its hub namespace.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toil_mesos.cluster._isolation import pids_in_mount_namespace
from toil_mesos.cluster.testing import MiniCluster

#: As agents start it (absolute: agents run executors with a fixed PATH); ``env`` puts the
#: bundle cache in the test's own directory, so leftovers of staging can be checked there.
VENV_BIN = Path(sys.executable).parent


def executor_command(bundle_cache: Path) -> str:
    return f"env TOIL_MESOS_BUNDLE_CACHE={bundle_cache} {VENV_BIN / 'toil-mesos'} executor"


WORKFLOW = '''\
"""A fan-out whose jobs record every attempt and hold a lock while they run."""
import fcntl
import json
import os
import time
import uuid

from toil.common import Toil
from toil.job import Job

CODE_VERSION = {version!r}


def _append(path, **record):
    with open(path, "a") as out:
        out.write(json.dumps(record) + "\\n")


def work(job, index, records, seconds):
    attempt = uuid.uuid4().hex
    log = os.path.join(records, "attempts", "%d.log" % index)
    with open(os.path.join(records, "locks", str(index)), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            overlap = False
        except BlockingIOError:
            overlap = True
        _append(log, event="start", attempt=attempt, t=time.time(), overlap=overlap,
                pid=os.getpid(), agent=os.environ.get("MESOS_SLAVE_ID"),
                task=os.environ.get("TOIL_MESOS_TASK_ID"))
        time.sleep(seconds)
        value = "%s:%d" % (CODE_VERSION, index * index)
        out = os.path.join(records, "out", str(index))
        with open(out + "." + attempt, "w") as tmp:
            tmp.write(value)
        os.replace(out + "." + attempt, out)
        _append(log, event="end", attempt=attempt, t=time.time())
    return value


def fan_out(job, count, records, seconds, cores):
    values = [job.addChildJobFn(work, i, records, seconds, cores=cores, memory="40M",
                                disk="1M").rv() for i in range(count)]
    return job.addFollowOnJobFn(collect, values, cores=cores, memory="40M", disk="1M").rv()


def collect(job, values):
    return values


def main():
    parser = Job.Runner.getDefaultArgumentParser()
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--records", required=True)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--cores", type=float, default=0.2)
    options = parser.parse_args()
    for sub in ("attempts", "locks", "out"):
        os.makedirs(os.path.join(options.records, sub), exist_ok=True)
    with Toil(options) as toil:
        if options.restart:
            values = toil.restart()
        else:
            values = toil.start(Job.wrapJobFn(fan_out, options.jobs, options.records,
                                              options.seconds, options.cores,
                                              cores=options.cores, memory="40M", disk="1M"))
    print("RESULT " + json.dumps(values))


if __name__ == "__main__":
    main()
'''


def write_workflow(directory: Path, *, version: str = "v1") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "faultflow.py"
    script.write_text(WORKFLOW.format(version=version))
    return script


def leader_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TOIL"))}


def start_leader(python: Path, script: Path, mini: MiniCluster, job_store: Path,
                 records: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """The leader as a child of the test, its output in ``log`` (read it while it runs)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(python), script.name, str(job_store), "--batchSystem", "mesos",
             "--mesosEndpoint", mini.endpoint,
             "--mesosExecutor", executor_command(records.parent / "bundle-cache"),
             "--logLevel", "INFO", "--records", str(records), *extra],
            cwd=script.parent, env=leader_env(), stdout=out, stderr=subprocess.STDOUT,
        )


def finish(process: subprocess.Popen[bytes], timeout: float) -> int:
    """The leader's exit status, waiting at most ``timeout``; killed (and reaped) otherwise."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)
        raise


# --- the cluster's state ------------------------------------------------------------------------


def master_state(mini: MiniCluster) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{mini.master}/state", timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def wait_until(predicate: Callable[[], object], timeout: float = 60.0,
               interval: float = 0.2) -> bool:
    """Poll ``predicate`` until true or ``timeout``: a bounded wait on a condition."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# --- processes ----------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def agent_executor_pids(mini: MiniCluster, index: int) -> list[int]:
    """The toil-mesos executors of agent ``index``, including those a restarted agent recovered
    (no longer its children): session leaders working in the agent's sandboxes, and whatever
    in those sessions runs ``toil-mesos executor``."""
    sandboxes = str(mini.work_dir / "agents" / str(index)) + "/"
    sessions = []
    for pid in _pids():
        stat = _stat(pid)
        if stat is None or int(stat[3]) != pid:
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd.startswith(sandboxes):
            sessions.append(pid)
    found = []
    for pid in _pids():
        stat = _stat(pid)
        if (stat is not None and int(stat[3]) in sessions and stat[0] not in "ZX"
                and "toil-mesos executor" in cmdline(pid)):
            found.append(pid)
    return found


def running_on(records: Path, agent_id: str) -> list[int]:
    """The jobs with an attempt running on agent ``agent_id`` now: started, not ended, and its
    process alive (an attempt killed by an earlier fault never records its end)."""
    try:
        result = Records.read(records)
    except ValueError:  # a line being written right now: ask again
        return []

    def alive(pid: int | None) -> bool:
        stat = None if pid is None else _stat(pid)
        return stat is not None and stat[0] not in "ZX"

    return sorted(index for index, attempts in result.attempts.items()
                  if any(a.agent == agent_id and a.end is None and alive(a.pid)
                         for a in attempts))


def processes_under(directory: Path) -> list[str]:
    """``pid cmdline`` of every live process whose command line or working directory is in
    ``directory`` (daemons name their work dirs; executors, workers and jobs run in sandboxes)."""
    me = os.getpid()
    found = []
    for pid in _pids():
        stat = _stat(pid)
        if pid == me or stat is None or stat[0] in "ZX":
            continue
        line = cmdline(pid)
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = ""
        if str(directory) in line or cwd.startswith(str(directory)):
            found.append(f"{pid} {line}")
    return found


# --- faults -------------------------------------------------------------------------------------


def link_of(mini: MiniCluster, index: int) -> tuple[str, str]:
    """(hub namespace, bridge port) of agent ``index``: the cluster's own link to cut."""
    network = mini.network
    assert network is not None, "cutting the network needs netns=True"
    return network.hub, f"a{index}"


def set_link(mini: MiniCluster, index: int, state: str) -> None:
    hub, port = link_of(mini, index)
    ip = shutil.which("ip") or "/usr/sbin/ip"
    subprocess.run([ip, "-n", hub, "link", "set", port, state], check=True, timeout=20,
                   capture_output=True)


# --- records ------------------------------------------------------------------------------------


@dataclass
class Attempt:
    index: int
    attempt: str
    start: float
    end: float | None = None
    overlap: bool = False
    agent: str | None = None
    pid: int | None = None


@dataclass
class Records:
    attempts: dict[int, list[Attempt]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def read(cls, records: Path) -> Records:
        result = cls()
        for log in sorted((records / "attempts").glob("*.log")):
            index = int(log.stem)
            by_id: dict[str, Attempt] = {}
            for line in log.read_text().splitlines():
                if not line.strip():
                    continue
                entry = json.loads(line)
                if entry["event"] == "start":
                    attempt = Attempt(index, entry["attempt"], entry["t"],
                                      overlap=entry["overlap"], agent=entry.get("agent"),
                                      pid=entry.get("pid"))
                    by_id[attempt.attempt] = attempt
                    result.attempts[index].append(attempt)
                elif entry["event"] == "end":
                    by_id[entry["attempt"]].end = entry["t"]
        return result

    def started(self) -> int:
        return sum(len(a) for a in self.attempts.values())

    def reissued(self) -> int:
        """Attempts beyond the first of each job."""
        return sum(len(a) - 1 for a in self.attempts.values() if a)

    def overlaps(self) -> list[str]:
        """Every sign that two attempts of one job ran at once; empty when none did."""
        problems = []
        for index, attempts in self.attempts.items():
            problems.extend(f"job {index}: attempt {a.attempt} found the job's lock held"
                            for a in attempts if a.overlap)
            ended = sorted((a for a in attempts if a.end is not None), key=lambda a: a.start)
            for first, second in itertools.combinations(ended, 2):
                assert first.end is not None
                if second.start < first.end:
                    problems.append(f"job {index}: attempts {first.attempt} and "
                                    f"{second.attempt} overlap in time")
        return problems


def check_outputs(records: Path, count: int, version: str | None = None) -> list[str]:
    """The jobs whose output is missing or wrong ("lost"); empty when all are right."""
    lost = []
    for index in range(count):
        out = records / "out" / str(index)
        expected_tail = f":{index * index}"
        if not out.exists():
            lost.append(f"job {index}: no output")
            continue
        value = out.read_text()
        if not value.endswith(expected_tail) or (version and not value.startswith(version)):
            lost.append(f"job {index}: wrong output {value!r}")
    return lost


def leftovers(mini_record: Any, work_dir: Path, bundle_cache: Path) -> list[str]:
    """What a closed cluster and its workflows left behind: processes, mounts, namespaces,
    links, staging temp dirs. ``mini_record`` is the cluster's record taken while it ran."""
    found: list[str] = []
    found.extend(f"process {p}" for p in processes_under(work_dir))
    for daemon in mini_record.daemons:
        for inode in daemon.mount_namespaces:
            found.extend(f"process {pid} in mount namespace {inode}"
                         for pid in pids_in_mount_namespace(inode))
    mounts = Path("/proc/self/mountinfo").read_text()
    found.extend(f"mount {line}" for line in mounts.splitlines()
                 if str(work_dir) in line or " toil-mesos-" in line)
    network = mini_record.network
    if network is not None:
        for name in (network.hub, *network.namespaces):
            if Path("/run/netns", name).exists():
                found.append(f"netns {name}")
        if Path("/sys/class/net", network.host_link).exists():
            found.append(f"link {network.host_link}")
    tmp = bundle_cache / ".tmp"
    if tmp.exists():
        found.extend(f"staging temp {p}" for p in tmp.iterdir())
    return found


def signal_pid(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def count_starts(records: Path) -> int:
    """Attempts started so far (safe while jobs are still appending)."""
    return sum(log.read_text().count('"event": "start"')
               for log in (records / "attempts").glob("*.log"))
