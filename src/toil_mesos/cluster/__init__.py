"""A local Mesos mini-cluster for tests and demos: a master and agents as real processes.

It speaks the public Mesos v1 HTTP APIs (``/api/v1/scheduler`` on the master, ``/api/v1/executor``
on each agent, ``/state``, ``/health``, ``/files``) faithfully enough that a framework tested
against it works against real Mesos, and it can run each agent in namespaces of its own so that
agents cannot see the leader's files. It is a test and demo cluster, not a replacement for Mesos:
no authentication, no persistence, no roles beyond ``*``, no containerizers beyond plain processes.

It uses the project's Mesos wire code (``toil_mesos.mesos``) and nothing from Toil.
"""

from __future__ import annotations

__all__: list[str] = []
