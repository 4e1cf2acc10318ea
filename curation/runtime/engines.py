"""The engine switch for the heavy jobs: ``local`` (this process) or ``ray`` (a Ray cluster), and Ray's connection."""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from curation.core.validate import check_choice

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
"""Where embedding, the kNN graph and out-of-fold scoring run; local is the default."""
ADDRESS_ENV = "CURATION_RAY_ADDRESS"
"""A configured Ray cluster (``host:port``, or ``auto``): the Home page then offers the Ray engine."""
INSTALL_HINT = "pip install 'ray[data]==2.60.0'"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_UNSET = object()
_connected: object = _UNSET
"""The address this process is connected to (None = its private instance), or _UNSET."""


class EngineError(RuntimeError):
    """An engine that cannot run here; the message says what to do."""


def check_engine(engine: str | None) -> str:
    """The engine name (``None`` = ``local``); an unknown one raises ValueError listing the valid ones."""
    engine = engine or "local"
    check_choice("engine", engine, ENGINES)
    return engine


def add_engine_args(parser: Any) -> None:
    """``--engine`` and ``--address`` on an argparse (sub)parser (the CLI's ``embed`` and ``pipeline``)."""
    parser.add_argument("--engine", choices=ENGINES, default="local",
                        help="where embedding, the kNN graph and out-of-fold scoring run (default local)")
    parser.add_argument("--address", default=None, metavar="HOST:PORT",
                        help="Ray head node for --engine ray (default: a private Ray instance on this machine)")


def configured_address() -> str | None:
    """The Ray address from ``CURATION_RAY_ADDRESS``, or None when no cluster is configured."""
    return os.environ.get(ADDRESS_ENV, "").strip() or None


def ray_available() -> bool:
    """True when Ray Data can be imported."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        return False
    return True


def require_ray() -> Any:
    """Import ray (quietly: no usage stats); raises EngineError with the install command when missing."""
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise EngineError(f"The Ray engine needs Ray Data: `{INSTALL_HINT}` (or use --engine local).") from exc
    return ray


def _package_on_path() -> None:
    """Put this checkout on ``PYTHONPATH`` so the worker processes of nodes started from here import ``curation``
    (remote nodes need the same checkout and environment: see docs/scale.md)."""
    root = str(Path(__file__).resolve().parents[2])
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *parts])


def _loopback_only(address: str | None) -> None:
    """Let a driver reach a cluster whose nodes listen on 127.0.0.1 only.

    Ray replaces a loopback bootstrap address by this machine's routable IP, where such a cluster does not
    listen; this turns that off for the process (Ray's own switch, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``).
    """
    host = (address or "").rsplit(":", 1)[0].strip("[]")
    if address is not None and host not in _LOOPBACK:
        return
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    _package_on_path()
    try:
        import ray._private.ray_constants as rc

        rc.ENABLE_RAY_CLUSTER = False
    except (ImportError, AttributeError):  # pragma: no cover - Ray moved it: the env var still applies to new processes
        log.debug("could not switch Ray to loopback addresses in this process")


def connect(address: str | None = None, *, num_cpus: int | None = None) -> Any:
    """Connect this process to the Ray cluster at ``address`` (reused when already connected to it).

    Parameters
    ----------
    address : ``host:port`` of the head node, ``auto`` (the cluster started on this machine), or None to
        start a private single-node Ray instance in this process (``num_cpus`` CPUs; all when None).

    Returns
    -------
    The ``ray`` module, initialised.
    """
    global _connected
    ray = require_ray()
    _loopback_only(address)
    if ray.is_initialized():
        if _connected == address:
            return ray
        ray.shutdown()
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True,
                              "configure_logging": False}
    try:
        if address is None:
            ray.init(num_cpus=num_cpus, object_store_memory=256 * 2**20, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise EngineError(f"Cannot connect to the Ray cluster at {address}: {exc}. Start one with "
                          "`ray start --head` (and `ray start --address=HEAD:PORT` on each worker) or drop "
                          "--address to use a private local instance.") from exc
    _connected = address
    res = ray.cluster_resources()
    log.info("connected to Ray at %s: %d nodes, %s CPU, %s GPU", address or "a private local instance",
             len([n for n in ray.nodes() if n.get("Alive")]), res.get("CPU", 0), res.get("GPU", 0))
    return ray


def disconnect() -> None:
    """Leave the Ray cluster (a private instance stops)."""
    global _connected
    _connected = _UNSET
    try:
        import ray
    except ImportError:
        return
    if ray.is_initialized():
        ray.shutdown()


@dataclass
class LocalCluster:
    """A Ray cluster of ``nodes`` node processes on 127.0.0.1 (a head and workers), started by :func:`local_cluster`.

    Attributes
    ----------
    address : ``127.0.0.1:port`` of the head (give it to ``--address``).
    nodes : node processes (head included); cpus_per_node : CPUs each advertises.
    """

    address: str
    nodes: int
    cpus_per_node: int
    _cluster: Any = field(default=None, repr=False)

    def add_worker(self) -> None:
        """Start one more worker node process and wait until it joins."""
        self._cluster.add_node(num_cpus=self.cpus_per_node, object_store_memory=_STORE,
                               node_ip_address="127.0.0.1")
        self.nodes += 1
        self._cluster.wait_for_nodes()


_STORE = 128 * 2**20
"""Object store of each local-cluster node: small, the images stream through."""


@contextmanager
def local_cluster(nodes: int = 2, *, cpus_per_node: int = 1, timeout: float = 120.0) -> Iterator[LocalCluster]:
    """Start a head plus ``nodes - 1`` worker node processes on 127.0.0.1, connect this process, stop them after.

    For tests and benchmarks on one machine: each node is a separate raylet with its own worker processes,
    as on a real cluster. Only the processes started here are stopped (never ``ray stop``).

    Raises
    ------
    EngineError when Ray is missing or the cluster does not come up within ``timeout`` seconds.
    """
    _loopback_only(None)
    ray = require_ray()
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        disconnect()
    t0 = time.perf_counter()
    try:
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": cpus_per_node, "include_dashboard": False, "object_store_memory": _STORE,
            "node_ip_address": "127.0.0.1"})
    except Exception as exc:  # noqa: BLE001 - any start failure is "Ray cannot run here"
        raise EngineError(f"A local Ray cluster could not start here: {exc}") from exc
    lc = LocalCluster(address=str(cluster.address), nodes=1, cpus_per_node=cpus_per_node, _cluster=cluster)
    try:
        for _ in range(nodes - 1):
            lc.add_worker()
        connect(lc.address)
        deadline = time.monotonic() + timeout
        while len([n for n in ray.nodes() if n.get("Alive")]) < nodes:
            if time.monotonic() > deadline:
                raise EngineError(f"Only {len(ray.nodes())} of {nodes} Ray nodes joined within {timeout:.0f} s.")
            time.sleep(0.2)
        log.info("local Ray cluster of %d nodes up at %s in %.1f s", nodes, lc.address, time.perf_counter() - t0)
        yield lc
    finally:
        disconnect()
        cluster.shutdown()


def describe_cluster() -> dict[str, Any]:
    """Nodes, CPUs and GPUs of the connected cluster (for job results and the benchmark)."""
    ray = require_ray()
    res = ray.cluster_resources()
    return {"nodes": len([n for n in ray.nodes() if n.get("Alive")]), "cpus": float(res.get("CPU", 0)),
            "gpus": float(res.get("GPU", 0))}
