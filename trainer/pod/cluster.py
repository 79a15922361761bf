"""This pod's role in a cluster of pods, from the variables the cluster gives each pod.

A multi-node job runs the same image on every pod; torch.distributed's static rendezvous (torchrun,
under `accelerate launch`) joins them. Two kinds of cluster are recognised, by their own variables
(PLATFORM.md §7); with none of them set the pod is one node, as before:

- RunPod Instant Clusters: PRIMARY_ADDR (= MASTER_ADDR), PRIMARY_PORT (= MASTER_PORT), NODE_RANK
  (0 = the primary), NUM_NODES, NUM_TRAINERS (GPUs per pod), WORLD_SIZE (every GPU of the cluster),
  NODE_ADDR / HOST_NODE_ADDR (this pod; informational). Pods talk over `ens1`.
- Kubeflow Trainer (TrainJob, torch-distributed runtime): PET_NNODES, PET_NPROC_PER_NODE,
  PET_NODE_RANK, PET_MASTER_ADDR, PET_MASTER_PORT.

Plus this image's own: RENDEZVOUS_TIMEOUT_S (how long the nodes wait for each other at the start)
and COLLECTIVE_TIMEOUT_S (how long a rank waits in a collective for the others before the job
ends: what turns a node that died into an error instead of a hang).

A value that cannot be used, or two that disagree, is a ConfigError naming the variable, before
anything is launched. Nothing here imports torch: the parent reads it before the launch.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from trainer.config.errors import ConfigError, Problem
from trainer.config.exits import STOPPED

RUNPOD_VARIABLES = ("PRIMARY_ADDR", "MASTER_ADDR", "PRIMARY_PORT", "MASTER_PORT", "NODE_ADDR", "NODE_RANK",
                    "NUM_NODES", "NUM_TRAINERS", "HOST_NODE_ADDR", "WORLD_SIZE")
KUBEFLOW_VARIABLES = ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT")
#: Variables that say "this pod is part of a RunPod cluster" (MASTER_ADDR / WORLD_SIZE alone are too common).
RUNPOD_MARKERS = ("PRIMARY_ADDR", "NUM_NODES", "NODE_RANK")

#: How long the nodes wait for each other at the start. Pods of a cluster start within a minute of
#: each other once their images are pulled; ten minutes (torch's own static default) covers a slow pull.
DEFAULT_RENDEZVOUS_TIMEOUT_S = 600
#: How long a rank waits in a collective (NCCL / gloo) before it gives up. One node: four hours, as
#: the image always had (a round or a save on a big model can keep the others at a barrier). A
#: cluster: thirty minutes, so that a node that vanished without closing its connections (a pod
#: lost with its host) ends the job in half an hour instead of four.
DEFAULT_COLLECTIVE_TIMEOUT_S = {False: 4 * 3600, True: 1800}
DEFAULT_PORT = 29500  # torchrun's

#: RunPod: traffic between the pods of a cluster must use this interface (eth0 times out).
RUNPOD_INTERFACE = "ens1"
INTERFACE_VARIABLES = ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME")

#: Written by each training process when it starts (trainer/child.py): torchrun starts the training
#: processes only once every node has joined, so its absence after a failed launch means the
#: cluster never formed.
JOINED_MARKER = ".cluster-joined"


@dataclass(frozen=True)
class Cluster:
    """This node's place in the job: `kind` "single" (no cluster variable), "runpod" or "kubeflow"."""

    kind: str = "single"
    nodes: int = 1
    node_rank: int = 0
    primary_addr: str | None = None
    primary_port: int | None = None
    processes_per_node: int | None = None  # what the cluster says (NUM_TRAINERS / PET_NPROC_PER_NODE)
    world_size: int | None = None  # what the cluster says (WORLD_SIZE), checked against the launch
    node_addr: str | None = None
    rendezvous_timeout_s: int = DEFAULT_RENDEZVOUS_TIMEOUT_S
    variables: tuple[str, ...] = field(default=())  # the variables it was read from, for the report

    @property
    def multi_node(self) -> bool:
        return self.nodes > 1

    @property
    def is_primary(self) -> bool:
        """Node 0: the one that calls the platform's job routes, migrates, and writes the rows."""
        return self.node_rank == 0

    @property
    def label(self) -> str:
        return {"single": "one node", "runpod": "RunPod Instant Cluster",
                "kubeflow": "Kubeflow TrainJob (torch-distributed)"}[self.kind]

    def describe(self, processes_per_node: int) -> str:
        """The startup report's line."""
        if self.kind == "single":
            return f"cluster: none (one node, world size {processes_per_node})"
        role = "the primary" if self.is_primary else "a worker"
        return (f"cluster: {self.label}: this node is rank {self.node_rank} of {self.nodes} nodes ({role}), "
                f"{_plural(processes_per_node, 'process', 'processes')} per node, world size {processes_per_node * self.nodes}, "
                f"primary {self.primary_addr}:{self.primary_port}, rendezvous timeout {self.rendezvous_timeout_s}s"
                + (f"; this node {self.node_addr}" if self.node_addr else ""))


def _int(problems: list[Problem], environ: Mapping[str, str], name: str, *, low: int, high: int | None = None,
         accepted: str) -> int | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        problems.append(Problem(name, f"{raw!r} is not usable; accepted: {accepted}"))
        return None
    return value


def _address(problems: list[Problem], environ: Mapping[str, str], name: str) -> str | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})", raw):
            problems.append(Problem(name, f"{raw!r} is not an IP address or a host name; accepted: e.g. 10.65.0.2"))
            return None
    return raw


def _one_of(problems: list[Problem], values: dict[str, object]) -> object | None:
    """The value of two names for the same thing (PRIMARY_ADDR / MASTER_ADDR); both set and
    different is an error."""
    given = {k: v for k, v in values.items() if v is not None}
    if len(set(given.values())) > 1:
        a, b = given
        problems.append(Problem(a, f"{given[a]!r} but {b} is {given[b]!r}; they name the same thing and must agree"))
        return None
    return next(iter(given.values()), None)


def detect_cluster(environ: Mapping[str, str] = os.environ) -> Cluster:
    """This node's role from RunPod's or Kubeflow's variables; one node when neither is set."""
    problems: list[Problem] = []
    timeout = _int(problems, environ, "RENDEZVOUS_TIMEOUT_S", low=1,
                   accepted="seconds, a positive integer") or DEFAULT_RENDEZVOUS_TIMEOUT_S
    kubeflow = [v for v in KUBEFLOW_VARIABLES if environ.get(v, "").strip()]
    runpod = [v for v in RUNPOD_VARIABLES if environ.get(v, "").strip()]
    is_runpod = any(environ.get(v, "").strip() for v in RUNPOD_MARKERS)
    if kubeflow:
        cluster = _kubeflow(problems, environ, kubeflow, timeout)
    elif is_runpod:
        cluster = _runpod(problems, environ, runpod, timeout)
    else:
        cluster = Cluster(rendezvous_timeout_s=timeout)
    try:
        collective_timeout_s(cluster.multi_node, environ)
    except ConfigError as e:
        problems.extend(e.problems)
    if problems:
        raise ConfigError(problems)
    return cluster


def _common(problems: list[Problem], kind: str, nodes: int | None, rank: int | None, addr: str | None,
            port: int | None, names: dict[str, str]) -> None:
    """What every cluster needs; `names` maps nodes / rank / addr to the variable that says it."""
    for value, what in ((nodes, "nodes"), (rank, "rank"), (addr, "addr")):
        if value is None and not any(p.variable == names[what] for p in problems):
            problems.append(Problem(names[what], f"missing: every pod of a {kind} needs it"))
    if nodes is not None and rank is not None and rank >= nodes:
        problems.append(Problem(names["rank"], f"{rank}, but {names['nodes']} is {nodes}; accepted: 0 to {nodes - 1}"))


def _runpod(problems: list[Problem], environ: Mapping[str, str], used: list[str], timeout: int) -> Cluster:
    nodes = _int(problems, environ, "NUM_NODES", low=1, accepted="the number of pods, 1 or more")
    rank = _int(problems, environ, "NODE_RANK", low=0, accepted="0 (the primary) to NUM_NODES - 1")
    addr = _one_of(problems, {"PRIMARY_ADDR": _address(problems, environ, "PRIMARY_ADDR"),
                              "MASTER_ADDR": _address(problems, environ, "MASTER_ADDR")})
    port = _one_of(problems, {
        "PRIMARY_PORT": _int(problems, environ, "PRIMARY_PORT", low=1, high=65535, accepted="a TCP port, 1-65535"),
        "MASTER_PORT": _int(problems, environ, "MASTER_PORT", low=1, high=65535, accepted="a TCP port, 1-65535")})
    per_node = _int(problems, environ, "NUM_TRAINERS", low=1, accepted="GPUs per pod, 1 or more")
    world = _int(problems, environ, "WORLD_SIZE", low=1, accepted="every GPU of the cluster: NUM_NODES × NUM_TRAINERS")
    node_addr = _address(problems, environ, "NODE_ADDR")
    _common(problems, "RunPod cluster", nodes, rank, addr, port,
            {"nodes": "NUM_NODES", "rank": "NODE_RANK", "addr": "PRIMARY_ADDR"})
    if world is not None and nodes is not None and per_node is not None and world != nodes * per_node:
        problems.append(Problem("WORLD_SIZE", f"{world}, but NUM_NODES × NUM_TRAINERS is {nodes} × {per_node} = "
                                f"{nodes * per_node}; they must agree"))
    return Cluster("runpod", nodes or 1, rank or 0, addr, port or DEFAULT_PORT, per_node, world, node_addr,  # type: ignore[arg-type]
                   timeout, tuple(used))


def _kubeflow(problems: list[Problem], environ: Mapping[str, str], used: list[str], timeout: int) -> Cluster:
    nodes = _int(problems, environ, "PET_NNODES", low=1, accepted="the number of nodes, 1 or more (no elastic range)")
    rank = _int(problems, environ, "PET_NODE_RANK", low=0, accepted="0 (the primary) to PET_NNODES - 1")
    addr = _address(problems, environ, "PET_MASTER_ADDR")
    port = _int(problems, environ, "PET_MASTER_PORT", low=1, high=65535, accepted="a TCP port, 1-65535")
    raw = environ.get("PET_NPROC_PER_NODE", "").strip()
    per_node = None
    if raw not in ("", "auto", "gpu"):
        per_node = _int(problems, environ, "PET_NPROC_PER_NODE", low=1,
                        accepted="processes per node: a positive integer, auto or gpu (one per GPU)")
    _common(problems, "Kubeflow", nodes, rank, addr, port,
            {"nodes": "PET_NNODES", "rank": "PET_NODE_RANK", "addr": "PET_MASTER_ADDR"})
    return Cluster("kubeflow", nodes or 1, rank or 0, addr, port or DEFAULT_PORT, per_node, None, None, timeout,
                   tuple(used))


def check_processes(cluster: Cluster, processes: int, num_processes_set: bool) -> None:
    """NUM_PROCESSES against what the cluster says each pod runs; ConfigError when they disagree."""
    if cluster.processes_per_node is not None and num_processes_set and processes != cluster.processes_per_node:
        name = "NUM_TRAINERS" if cluster.kind == "runpod" else "PET_NPROC_PER_NODE"
        raise ConfigError("NUM_PROCESSES", f"{processes}, but the cluster's {name} is {cluster.processes_per_node} "
                          f"processes per node; every node must run the same number: unset NUM_PROCESSES or make "
                          "them agree")


def collective_timeout_s(multi_node: bool, environ: Mapping[str, str] = os.environ) -> int:
    """COLLECTIVE_TIMEOUT_S, else the default for one node or a cluster (see above)."""
    raw = environ.get("COLLECTIVE_TIMEOUT_S", "").strip()
    if raw:
        value = int(raw) if raw.isdigit() else 0
        if value < 1:
            raise ConfigError("COLLECTIVE_TIMEOUT_S", f"{raw!r} is not usable; accepted: seconds, a positive integer")
        return value
    return DEFAULT_COLLECTIVE_TIMEOUT_S[multi_node]


def nodes_in_run(environ: Mapping[str, str] = os.environ) -> int:
    """In a training process: how many nodes the run spans (torchrun's WORLD_SIZE over LOCAL_WORLD_SIZE)."""
    world = int(environ.get("WORLD_SIZE", "1") or 1)
    local = int(environ.get("LOCAL_WORLD_SIZE", "") or world)
    return max(1, world // max(1, local))


def network_environment(cluster: Cluster, environ: Mapping[str, str] = os.environ,
                        interfaces: Path = Path("/sys/class/net")) -> dict[str, str]:
    """The interface variables a RunPod cluster needs: ens1 when this pod has it and the user set
    nothing (their own NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME always win)."""
    if cluster.kind != "runpod" or not cluster.multi_node or not (interfaces / RUNPOD_INTERFACE).exists():
        return {}
    return {name: RUNPOD_INTERFACE for name in INTERFACE_VARIABLES if not environ.get(name)}


def mark_joined(output_dir: Path) -> None:
    """A training process started: every node joined the rendezvous (see JOINED_MARKER)."""
    try:
        (Path(output_dir) / JOINED_MARKER).touch()
    except OSError:
        pass  # the parent then reports a failed start it could not tell apart; never fatal here


def joined(output_dir: Path, *, clear: bool = False) -> bool:
    """Whether a training process of this launch started (and, with `clear`, forget it)."""
    marker = Path(output_dir) / JOINED_MARKER
    found = marker.exists()
    if clear:
        marker.unlink(missing_ok=True)
    return found


def claims_primary(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this pod may be node 0, read leniently (for an error found before the cluster's
    variables are known to be good): only node 0 tells the platform that the job failed."""
    for name in ("PET_NODE_RANK", "NODE_RANK"):
        raw = environ.get(name, "").strip()
        if raw:
            return not raw.isdigit() or int(raw) == 0
    return True


def launch_failure(cluster: Cluster, output_dir: Path, code: int, recorded: str | None = None) -> str | None:
    """Why a cluster's launch failed, in the cluster's terms: the nodes never all met (no training
    process started), or a training process failed (`recorded`, its error) — when that error is a
    peer that went away, which node it was. None for one node, a success or a stop."""
    started = joined(output_dir, clear=True)
    if not cluster.multi_node or code == 0 or code in STOPPED:
        return None
    if not started:
        return never_joined_message(cluster)
    if not recorded:
        return None
    # gloo says "Connection closed by peer [addr]:port" or "Read error [addr]:port: Connection reset by peer"
    peer = re.search(r"(?:closed by peer|reset by peer|peer|Read error|Write error) \[?([0-9a-fA-F.:]+?)\]?:(\d+)",
                     recorded)
    if peer or re.search(r"NCCL|[Gg]loo|Connection (closed|reset)|timed out|Timeout", recorded):
        gone = (f"the node at {peer.group(1)} (its NODE_ADDR) went away" if peer
                else "another node stopped answering")
        return (f"cluster: node {cluster.node_rank} of {cluster.nodes} lost the cluster: {gone}; a pod of the "
                f"cluster stopped or died mid-run (its own log says why), so every node ends: {recorded}")
    return None


def never_joined_message(cluster: Cluster) -> str:
    """Why a cluster launch ended before any training process started."""
    if cluster.is_primary:
        missing = (f"{_plural(cluster.nodes - 1, 'other node')} (ranks 1 to {cluster.nodes - 1}) did not all join "
                   f"this node's rendezvous at {cluster.primary_addr}:{cluster.primary_port}")
    else:
        missing = (f"this node (rank {cluster.node_rank}) could not join the rendezvous at the primary "
                   f"{cluster.primary_addr}:{cluster.primary_port} together with every other node")
    return (f"cluster: the {cluster.nodes} nodes never all met: {missing} within RENDEZVOUS_TIMEOUT_S="
            f"{cluster.rendezvous_timeout_s}s; check that every pod runs this image with the same NUM_NODES, "
            "that the primary's address and port are reachable from every pod, and that no pod failed to start")


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {plural or word + 's'}"
