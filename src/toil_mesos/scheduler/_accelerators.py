"""Toil's accelerator requirements in Mesos' terms: how many ``gpus`` a job asks for.

Toil describes accelerators as ``{"kind": "gpu", "count": N}``, optionally with ``brand``,
``api`` and ``model`` (:class:`toil.job.AcceleratorRequirement`). Mesos has one GPU resource,
the scalar ``gpus``, which agents offer through their Nvidia GPU isolator; nothing in an offer
says which brand or model an agent's devices are. So:

* ``kind`` must be ``gpu``; any other kind can never be had on Mesos and is refused at once.
* ``brand`` may only be ``nvidia`` and ``api`` only ``cuda``: the only GPUs Mesos isolates.
* ``model`` cannot be checked against an offer; it is accepted and not enforced (the job gets
  whatever GPUs the agent has), which :func:`unchecked_models` lets the leader say once.

Pure functions, so the rules are tested without a batch system.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["gpus_of", "refusal", "unchecked_models"]

#: What Mesos' GPU support can give: its isolator drives Nvidia devices through CUDA.
_BRANDS = frozenset({"nvidia"})
_APIS = frozenset({"cuda"})


def refusal(accelerator: Mapping[str, Any]) -> str | None:
    """Why *accelerator* can never be had on Mesos, or None when it can.

    >>> refusal({"kind": "gpu", "count": 1, "brand": "nvidia"}) is None
    True
    >>> refusal({"kind": "fpga", "count": 1})
    "accelerator kind 'fpga' is not available on Mesos: agents offer only GPUs (kind 'gpu')"
    """
    kind = str(accelerator.get("kind", ""))
    if kind != "gpu":
        return (f"accelerator kind {kind!r} is not available on Mesos: agents offer only GPUs "
                "(kind 'gpu')")
    brand = accelerator.get("brand")
    if brand is not None and str(brand).lower() not in _BRANDS:
        return (f"GPU brand {brand!r} is not available on Mesos: its GPU isolator supports "
                "only Nvidia GPUs (brand 'nvidia')")
    api = accelerator.get("api")
    if api is not None and str(api).lower() not in _APIS:
        return (f"GPU API {api!r} is not available on Mesos: its GPUs are Nvidia GPUs used "
                "through CUDA (api 'cuda')")
    count = accelerator.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        return f"GPU count {count!r} is not a positive whole number of GPUs"
    return None


def gpus_of(accelerators: Iterable[Mapping[str, Any]]) -> int:
    """The whole GPUs a job asks for: the sum of its GPU requirements' counts.

    Requirements :func:`refusal` refuses are Toil's to reject before this is asked.

    >>> gpus_of([{"kind": "gpu", "count": 2}, {"kind": "gpu", "count": 1, "api": "cuda"}])
    3
    >>> gpus_of([])
    0
    """
    return sum(int(a.get("count", 1)) for a in accelerators if a.get("kind") == "gpu")


def unchecked_models(accelerators: Iterable[Mapping[str, Any]]) -> list[str]:
    """The GPU models a job names, which no Mesos offer lets the scheduler check.

    >>> unchecked_models([{"kind": "gpu", "count": 1, "model": "nvidia-tesla-k80"}])
    ['nvidia-tesla-k80']
    """
    return [str(a["model"]) for a in accelerators if a.get("kind") == "gpu" and a.get("model")]
