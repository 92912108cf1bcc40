"""A simulated Mesos master speaking the v1 scheduler HTTP API on loopback, for scale benches.

It keeps no real agents: N agents of fixed size are numbers in a table. Like Mesos' allocator
it sends, every ``--offer-interval`` seconds, one OFFERS event with an offer for each agent that
has anything unallocated, is not filtered by a DECLINE's ``refuse_seconds``, and has no offer
outstanding (SUPPRESS stops this, REVIVE resumes it and clears the filters). An ACCEPT with a
LAUNCH allocates the tasks' resources; each task is reported TASK_RUNNING at once and
TASK_FINISHED (exit status 0, as our executor reports it) after ``--task-seconds``. Updates
carry a uuid and are resent, as the agent's status update manager does, until acknowledged.

It records how long the framework took to answer each OFFERS event (until every offer of it
was accepted or declined), resends, launches and the TEARDOWN, and serves them as JSON at
``GET /stats``. Run it in its own process so the leader's CPU and memory are measured alone:

    python bench/sim_master.py --agents 100 --task-seconds 5 --port-file PATH
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FRAMEWORK_ID = "sim-framework-0001"
RESEND_SECONDS = 10.0  # the agent's first status update retry interval in Mesos
EXIT_0 = base64.b64encode(json.dumps({"exit_status": 0, "failure": None}).encode()).decode()


def record(event: dict[str, Any]) -> bytes:
    data = json.dumps(event, separators=(",", ":")).encode()
    return b"%d\n%s" % (len(data), data)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@dataclass
class Agent:
    agent_id: str
    cpus: float
    mem: float
    disk: float
    used_cpus: float = 0.0
    used_mem: float = 0.0
    used_disk: float = 0.0
    refused_until: float = 0.0
    offered: str | None = None  # the outstanding offer id


@dataclass
class Stats:
    rounds: list[float] = field(default_factory=list)  # seconds to answer each OFFERS event
    round_sizes: list[int] = field(default_factory=list)
    offers_sent: int = 0
    launched: int = 0
    first_launch: float | None = None
    last_launch: float | None = None
    finished: int = 0
    updates: int = 0
    resends: int = 0
    acks: int = 0
    unknown_acks: int = 0
    declines: int = 0
    declined_offers: int = 0
    accepts: int = 0
    kills: int = 0
    calls: int = 0
    teardown_at: float | None = None
    subscribed_at: float | None = None


class SimMaster:
    def __init__(self, agents: int, cpus: float, mem: float, disk: float, task_seconds: float,
                 offer_interval: float) -> None:
        self.agents = {f"sim-S{i}": Agent(f"sim-S{i}", cpus, mem, disk) for i in range(agents)}
        self.task_seconds = task_seconds
        self.offer_interval = offer_interval
        self.stats = Stats()
        self.stream: asyncio.StreamWriter | None = None
        self.stream_id = str(uuid.uuid4())
        self.suppressed = False
        self.offers: dict[str, str] = {}  # offer id -> agent id
        self.rounds: dict[int, tuple[float, set[str]]] = {}
        self.round_of: dict[str, int] = {}
        self.pending: dict[str, tuple[float, bytes, int]] = {}  # uuid -> (sent, record, tries)
        self.tasks: dict[str, tuple[str, tuple[float, float, float]]] = {}
        self.next_offer = 0
        self.next_round = 0

    # ---- the event stream ------------------------------------------------------------------

    def send(self, event: dict[str, Any]) -> None:
        if self.stream is not None and not self.stream.is_closing():
            self.stream.write(chunk(record(event)))

    def update(self, task_id: str, agent_id: str, state: str) -> None:
        status: dict[str, Any] = {"task_id": {"value": task_id}, "state": state,
                                  "agent_id": {"value": agent_id}, "source": "SOURCE_EXECUTOR",
                                  "timestamp": time.time()}
        if state == "TASK_FINISHED":
            status["data"] = EXIT_0
        uuid_ = base64.b64encode(uuid.uuid4().bytes).decode()
        status["uuid"] = uuid_
        data = record({"type": "UPDATE", "update": {"status": status}})
        self.pending[uuid_] = (time.monotonic(), data, 1)
        self.stats.updates += 1
        if self.stream is not None and not self.stream.is_closing():
            self.stream.write(chunk(data))

    async def offer_loop(self) -> None:
        while True:
            await asyncio.sleep(self.offer_interval)
            if self.stream is None or self.suppressed:
                continue
            now = time.monotonic()
            offers = []
            for agent in self.agents.values():
                if agent.offered is not None or agent.refused_until > now:
                    continue
                free = (agent.cpus - agent.used_cpus, agent.mem - agent.used_mem,
                        agent.disk - agent.used_disk)
                if max(free) <= 0:
                    continue
                offer_id = f"sim-O{self.next_offer}"
                self.next_offer += 1
                agent.offered = offer_id
                self.offers[offer_id] = agent.agent_id
                self.round_of[offer_id] = self.next_round
                offers.append(_offer(offer_id, agent.agent_id, free))
            if not offers:
                continue
            self.rounds[self.next_round] = (now, {o["id"]["value"] for o in offers})
            self.next_round += 1
            self.stats.offers_sent += len(offers)
            self.send({"type": "OFFERS", "offers": {"offers": offers}})

    async def resend_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for uuid_, (sent, data, tries) in list(self.pending.items()):
                if now - sent >= RESEND_SECONDS * tries:
                    self.pending[uuid_] = (sent, data, tries + 1)
                    self.stats.resends += 1
                    self.send_raw(data)

    def send_raw(self, data: bytes) -> None:
        if self.stream is not None and not self.stream.is_closing():
            self.stream.write(chunk(data))

    async def heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(15.0)
            self.send({"type": "HEARTBEAT"})

    # ---- calls -----------------------------------------------------------------------------

    def answered(self, offer_id: str) -> Agent | None:
        agent_id = self.offers.pop(offer_id, None)
        if agent_id is None:
            return None
        agent = self.agents[agent_id]
        agent.offered = None
        number = self.round_of.pop(offer_id)
        sent, left = self.rounds[number]
        left.discard(offer_id)
        if not left:
            del self.rounds[number]
            self.stats.rounds.append(time.monotonic() - sent)
        return agent

    def call(self, body: dict[str, Any]) -> None:
        self.stats.calls += 1
        kind = body.get("type")
        if kind == "ACCEPT":
            self.stats.accepts += 1
            accept = body["accept"]
            agents = [self.answered(o["value"]) for o in accept["offer_ids"]]
            agent = next((a for a in agents if a is not None), None)
            for operation in accept.get("operations", ()):
                for task in operation.get("launch", {}).get("task_infos", ()):
                    if agent is not None:
                        self.launch(agent, task)
        elif kind == "DECLINE":
            self.stats.declines += 1
            decline = body["decline"]
            refuse = float((decline.get("filters") or {}).get("refuse_seconds", 5.0))
            for offer_id in decline["offer_ids"]:
                agent = self.answered(offer_id["value"])
                self.stats.declined_offers += 1
                if agent is not None:
                    agent.refused_until = time.monotonic() + refuse
        elif kind == "ACKNOWLEDGE":
            self.stats.acks += 1
            if self.pending.pop(body["acknowledge"]["uuid"], None) is None:
                self.stats.unknown_acks += 1
        elif kind == "SUPPRESS":
            self.suppressed = True
        elif kind == "REVIVE":
            self.suppressed = False
            for agent in self.agents.values():
                agent.refused_until = 0.0
        elif kind == "KILL":
            self.stats.kills += 1
            task_id = body["kill"]["task_id"]["value"]
            self.finish(task_id, "TASK_KILLED")
        elif kind == "TEARDOWN":
            self.stats.teardown_at = time.time()
            if self.stream is not None:
                self.stream.write(b"0\r\n\r\n")
                self.stream.close()
                self.stream = None

    def launch(self, agent: Agent, task: dict[str, Any]) -> None:
        need = {r["name"]: float(r["scalar"]["value"]) for r in task.get("resources", ())
                if r.get("type") == "SCALAR"}
        size = (need.get("cpus", 0.0), need.get("mem", 0.0), need.get("disk", 0.0))
        agent.used_cpus += size[0]
        agent.used_mem += size[1]
        agent.used_disk += size[2]
        task_id = task["task_id"]["value"]
        self.tasks[task_id] = (agent.agent_id, size)
        now = time.time()
        self.stats.launched += 1
        self.stats.first_launch = self.stats.first_launch or now
        self.stats.last_launch = now
        self.update(task_id, agent.agent_id, "TASK_RUNNING")
        asyncio.get_running_loop().call_later(self.task_seconds, self.finish, task_id,
                                              "TASK_FINISHED")

    def finish(self, task_id: str, state: str) -> None:
        entry = self.tasks.pop(task_id, None)
        if entry is None:
            return
        agent_id, size = entry
        agent = self.agents[agent_id]
        agent.used_cpus -= size[0]
        agent.used_mem -= size[1]
        agent.used_disk -= size[2]
        self.stats.finished += 1
        self.update(task_id, agent_id, state)

    # ---- HTTP ------------------------------------------------------------------------------

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip()
                           for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if method == "GET" and path == "/stats":
                    data = json.dumps(self.stats.__dict__).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
                    await writer.drain()
                    continue
                call = json.loads(body)
                if call.get("type") == "SUBSCRIBE":
                    await self.subscribe(writer)
                    return
                self.call(call)
                writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if writer is not self.stream:
                writer.close()

    async def subscribe(self, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\nMesos-Stream-Id: %s\r\n\r\n"
                     % self.stream_id.encode())
        self.stream = writer
        self.stats.subscribed_at = time.time()
        self.send({"type": "SUBSCRIBED", "subscribed": {
            "framework_id": {"value": FRAMEWORK_ID}, "heartbeat_interval_seconds": 15.0,
            "master_info": {"id": "sim", "ip": 16777343, "port": 5050,
                            "hostname": "localhost"}}})
        # Unacknowledged updates go out again on a new subscription, as Mesos does.
        for _, data, _ in self.pending.values():
            self.send_raw(data)
        while self.stream is writer and not writer.is_closing():
            await writer.drain()
            await asyncio.sleep(0.05)


def _offer(offer_id: str, agent_id: str, free: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "id": {"value": offer_id},
        "framework_id": {"value": FRAMEWORK_ID},
        "agent_id": {"value": agent_id},
        "hostname": agent_id,
        "resources": [
            {"name": name, "type": "SCALAR", "scalar": {"value": max(0.0, value)},
             "role": "*", "allocation_info": {"role": "*"}}
            for name, value in zip(("cpus", "mem", "disk"), free, strict=True)
        ],
        "allocation_info": {"role": "*"},
    }


async def main_async(args: argparse.Namespace) -> None:
    master = SimMaster(args.agents, args.cpus, args.mem, args.disk, args.task_seconds,
                       args.offer_interval)
    server = await asyncio.start_server(master.serve, "127.0.0.1", 0, limit=1 << 24)
    port = server.sockets[0].getsockname()[1]
    tmp = Path(str(args.port_file) + ".tmp")
    tmp.write_text(str(port))
    os.replace(tmp, args.port_file)
    tasks = [asyncio.create_task(loop()) for loop in
             (master.offer_loop, master.resend_loop, master.heartbeat_loop)]
    async with server:
        await server.serve_forever()
    for task in tasks:
        task.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, required=True)
    parser.add_argument("--cpus", type=float, default=16.0)
    parser.add_argument("--mem", type=float, default=65536.0)
    parser.add_argument("--disk", type=float, default=102400.0)
    parser.add_argument("--task-seconds", type=float, default=5.0)
    parser.add_argument("--offer-interval", type=float, default=1.0)
    parser.add_argument("--port-file", type=Path, required=True)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
