"""A cluster of pods: each node's role from RunPod's or Kubeflow's variables, the launch it makes,
and two nodes as two entrypoints on this machine (127.0.0.1 the primary, 127.0.0.2 the other;
one CPU process each, gloo over loopback, separate OUTPUT_DIRs)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e import (
    QUICK_TRAINING,
    ROOT,
    as_if_interrupted,
    job_env,
    kill_tree_hard,
    run_entrypoint,
    spool_rows,
    wait_for,
)
from tests.platform_double import ALERT_PATH, METRICS_PATH, PlatformDouble
from tests.ports import free_port
from trainer.config.errors import ConfigError
from trainer.pod.cluster import (
    Cluster,
    check_processes,
    claims_primary,
    collective_timeout_s,
    detect_cluster,
    launch_failure,
    mark_joined,
    network_environment,
    never_joined_message,
    nodes_in_run,
)
from trainer.pod.launch import launch_command

JOB, OWNER = "c1c1c1c1-1111-4222-8333-444455556666", "11111111-1111-4111-8111-111111111111"
TOKEN, KEY = "cluster-job-token", "cluster-internal-key"
TRAINING = {**QUICK_TRAINING, "max_steps": 10, "save_steps": 5, "logging_steps": 5}
PREDICTIONS = {"enabled": True, "sample_count": 8, "sample_frequency": "steps", "step_interval": 5,
               "max_new_tokens": 6, "baseline": True, "batch_size": 4}


def runpod(rank: int, port: int, nodes: int = 2) -> dict[str, str]:
    return {"PRIMARY_ADDR": "127.0.0.1", "MASTER_ADDR": "127.0.0.1", "PRIMARY_PORT": str(port),
            "MASTER_PORT": str(port), "NODE_ADDR": f"127.0.0.{rank + 1}", "NODE_RANK": str(rank),
            "NUM_NODES": str(nodes), "NUM_TRAINERS": "1", "WORLD_SIZE": str(nodes),
            "HOST_NODE_ADDR": f"127.0.0.{rank + 1}:{port}"}


def kubeflow(rank: int, port: int, nodes: int = 2) -> dict[str, str]:
    return {"PET_NNODES": str(nodes), "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": str(rank),
            "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(port)}


# -- the role --------------------------------------------------------------------------------


def test_no_cluster_variable_is_one_node():
    cluster = detect_cluster({})
    assert (cluster.kind, cluster.nodes, cluster.node_rank, cluster.is_primary) == ("single", 1, 0, True)
    assert not cluster.multi_node and cluster.rendezvous_timeout_s == 600
    assert "MASTER_ADDR" not in detect_cluster({"MASTER_ADDR": "10.0.0.1", "WORLD_SIZE": "8"}).variables


def test_runpod_and_kubeflow_variables_give_the_node_its_role():
    c = detect_cluster({**runpod(1, 29400, nodes=4), "NUM_TRAINERS": "8", "WORLD_SIZE": "32",
                        "RENDEZVOUS_TIMEOUT_S": "90"})
    assert (c.kind, c.nodes, c.node_rank, c.primary_addr, c.primary_port, c.processes_per_node) == (
        "runpod", 4, 1, "127.0.0.1", 29400, 8)
    assert not c.is_primary and c.rendezvous_timeout_s == 90
    assert c.describe(8) == ("cluster: RunPod Instant Cluster: this node is rank 1 of 4 nodes (a worker), 8 "
                             "processes per node, world size 32, primary 127.0.0.1:29400, rendezvous timeout 90s; "
                             "this node 127.0.0.2")
    k = detect_cluster({**kubeflow(0, 23456), "PET_NPROC_PER_NODE": "auto", "PET_MASTER_ADDR": "trainer-node-0-0.ns"})
    assert (k.kind, k.nodes, k.node_rank, k.primary_addr, k.primary_port, k.processes_per_node) == (
        "kubeflow", 2, 0, "trainer-node-0-0.ns", 23456, None)
    assert k.is_primary and collective_timeout_s(True, {}) == 1800 and collective_timeout_s(False, {}) == 4 * 3600


@pytest.mark.parametrize(("env", "variable", "says"), [
    ({**runpod(2, 1)}, "NODE_RANK", "2, but NUM_NODES is 2; accepted: 0 to 1"),
    ({**runpod(0, 1), "MASTER_ADDR": "10.1.1.1"}, "PRIMARY_ADDR", "they name the same thing and must agree"),
    ({**runpod(0, 1), "WORLD_SIZE": "3"}, "WORLD_SIZE", "NUM_NODES × NUM_TRAINERS is 2 × 1 = 2"),
    ({**runpod(0, 1), "PRIMARY_PORT": "70000", "MASTER_PORT": ""}, "PRIMARY_PORT", "accepted: a TCP port"),
    ({"NUM_NODES": "2", "NODE_RANK": "0"}, "PRIMARY_ADDR", "missing: every pod of a RunPod cluster needs it"),
    ({**kubeflow(0, 1), "PET_NNODES": "1:4"}, "PET_NNODES", "no elastic range"),
    ({**kubeflow(0, 1), "PET_NPROC_PER_NODE": "many"}, "PET_NPROC_PER_NODE", "auto or gpu"),
    ({"RENDEZVOUS_TIMEOUT_S": "soon"}, "RENDEZVOUS_TIMEOUT_S", "a positive integer"),
    ({**kubeflow(0, 1), "COLLECTIVE_TIMEOUT_S": "-5"}, "COLLECTIVE_TIMEOUT_S", "a positive integer"),
])
def test_unusable_or_disagreeing_values_are_refused_naming_the_variable(env, variable, says):
    with pytest.raises(ConfigError) as e:
        detect_cluster(env)
    assert variable in [p.variable for p in e.value.problems] and says in str(e.value)


def test_num_processes_must_agree_with_the_clusters_count_and_only_node_0_reports_a_bad_start():
    cluster = detect_cluster({**runpod(0, 1), "NUM_TRAINERS": "8", "WORLD_SIZE": "16"})
    check_processes(cluster, 8, num_processes_set=True)
    with pytest.raises(ConfigError, match="NUM_PROCESSES: 4, but the cluster's NUM_TRAINERS is 8"):
        check_processes(cluster, 4, num_processes_set=True)
    assert claims_primary({}) and claims_primary({"NODE_RANK": "0"}) and claims_primary({"NODE_RANK": "x"})
    assert not claims_primary({"NODE_RANK": "1"}) and not claims_primary({"PET_NODE_RANK": "3"})
    assert nodes_in_run({"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}) == 2 and nodes_in_run({}) == 1


def test_the_launch_joins_the_cluster_with_a_static_rendezvous(tmp_path):
    cluster = detect_cluster({**runpod(1, 29400), "NUM_TRAINERS": "4", "WORLD_SIZE": "8", "RENDEZVOUS_TIMEOUT_S": "45"})
    cmd, extra = launch_command(4, "bf16", "cuda", cluster)

    def arg(name):
        return cmd[cmd.index(name) + 1]

    assert (arg("--num_machines"), arg("--num_processes"), arg("--machine_rank")) == ("2", "8", "1")
    assert (arg("--main_process_ip"), arg("--main_process_port")) == ("127.0.0.1", "29400")
    assert (arg("--rdzv_backend"), arg("--rdzv_conf"), arg("--max_restarts")) == ("static", "timeout=45", "0")
    assert "--multi_gpu" in cmd and cmd[-2:] == ["-m", "trainer.train"]
    one, _ = launch_command(1, "no", "cpu", Cluster())
    assert one[one.index("--num_machines") + 1] == "1" and "--cpu" in one and "--rdzv_backend" not in one
    # RunPod's pods talk over ens1, set only where it exists and never over the user's own choice
    (tmp_path / "ens1").mkdir()
    assert network_environment(cluster, {}, tmp_path) == {"NCCL_SOCKET_IFNAME": "ens1", "GLOO_SOCKET_IFNAME": "ens1"}
    assert network_environment(cluster, {"NCCL_SOCKET_IFNAME": "ib0"}, tmp_path) == {"GLOO_SOCKET_IFNAME": "ens1"}
    assert network_environment(cluster, {}, tmp_path / "none") == {}
    assert network_environment(detect_cluster(kubeflow(0, 1)), {}, tmp_path) == {}


# -- two nodes on this machine ---------------------------------------------------------------


def node_env(out: Path, cluster: dict[str, str], **values) -> dict[str, str]:
    """A node's environment: gloo over loopback, the job's variables, the cluster's."""
    values = {"GLOO_SOCKET_IFNAME": "lo", "TRAINING_CONFIG": TRAINING, "PREDICTIONS_CONFIG": PREDICTIONS, **values}
    return job_env(out, **cluster, **values)


def start(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "entrypoint.py"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish_all(procs: list[subprocess.Popen], timeout: float = 300) -> list[str]:
    logs = []
    for proc in procs:
        try:
            logs.append(proc.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                kill_tree_hard(p)
            pytest.fail("a node did not end: the cluster hangs")
    return logs


@pytest.fixture
def platform():
    double = PlatformDouble(JOB, TOKEN, KEY)
    yield double
    double.close()


def platform_values(platform) -> dict[str, str]:
    return {"JOB_ID": JOB, "USER_ID": OWNER, "JOB_TOKEN": TOKEN, "INTERNAL_API_KEY": KEY,
            "METRICS_API_URL": platform.url + METRICS_PATH, "ALERT_API_URL": platform.url + ALERT_PATH}


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("kind", [runpod, kubeflow], ids=["runpod", "kubeflow"])
def test_two_nodes_train_one_job_and_node_0_alone_writes_and_reports(tmp_path, platform, kind):
    port, outs = free_port(), [tmp_path / "node0", tmp_path / "node1"]
    nodes = [start(node_env(out, kind(rank, port), **platform_values(platform))) for rank, out in enumerate(outs)]
    logs = finish_all(nodes)
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(log[-3000:] for log in logs)

    keys = Counter((r["step"], r["sample_index"]) for r in spool_rows(outs[0]))
    assert set(keys) == {(s, i) for s in (0, 5, 10) for i in range(8)} and set(keys.values()) == {1}
    assert not (outs[1] / "predictions.jsonl").exists()  # node 1 generated its share, node 0 wrote it
    assert logs[0].count("predictions: round ") == 3
    assert "8 samples over 2 ranks on 2 nodes (node 0 of 2: 4 of 8 samples on rank 0)" in logs[0]
    assert logs[1].count("predictions: share of round ") == 3
    assert "node 1 of 2: 4 of 8 samples on rank 1" in logs[1]
    assert "this node is rank 1 of 2 nodes (a worker)" in logs[1] and "this node is rank 0 of 2" in logs[0]
    assert "database: migrations, preflight and replay are node 0's" in logs[1]
    assert platform.types() == ["job_started", "job_completed"]  # once each, from node 0
    assert {p["step"] for p in platform.points()} >= {5, 10}
    # each node keeps what its restart needs; the final model is the primary's
    for out in outs:
        assert (out / "checkpoint-10" / "COMPLETE").exists() and (out / "checkpoint-10" / "model.safetensors").exists()
        assert json.loads((out / "job_state.json").read_text())["status"] == "completed"
    assert (outs[0] / "final" / "model.safetensors").exists() and not (outs[1] / "final").exists()

    if kind is runpod:  # the step-0 answers are one node's: the same weights, greedy, split or not
        single = tmp_path / "single"
        proc = run_entrypoint(job_env(single, TRAINING_CONFIG={**TRAINING, "max_steps": 1, "save_strategy": "no"},
                                      PREDICTIONS_CONFIG=PREDICTIONS))
        assert proc.returncode == 0, proc.stdout[-3000:]
        baseline = {r["sample_index"]: r["prediction"] for r in spool_rows(single) if r["step"] == 0}
        assert baseline == {r["sample_index"]: r["prediction"] for r in spool_rows(outs[0]) if r["step"] == 0}
    else:  # a restart of the cluster resumes every node from its own volume's checkpoint
        for out in outs:
            as_if_interrupted(out)
        longer = {**TRAINING, "max_steps": 15}
        nodes = [start(node_env(out, kind(rank, port), TRAINING_CONFIG=longer, **platform_values(platform)))
                 for rank, out in enumerate(outs)]
        logs = finish_all(nodes)
        assert [p.returncode for p in nodes] == [0, 0], "\n".join(log[-3000:] for log in logs)
        assert all("resume: from checkpoint-10" in log for log in logs)
        keys = Counter((r["step"], r["sample_index"]) for r in spool_rows(outs[0]))
        assert set(keys) == {(s, i) for s in (0, 5, 10, 15) for i in range(8)} and set(keys.values()) == {1}
        assert platform.types().count("job_completed") == 2 and "job_failed" not in platform.types()


@pytest.mark.slow
@pytest.mark.distributed
def test_a_node_that_never_joins_fails_the_job_once_after_the_rendezvous_timeout(tmp_path, platform):
    out = tmp_path / "node0"
    proc = run_entrypoint(node_env(out, {**runpod(0, free_port()), "RENDEZVOUS_TIMEOUT_S": "3"},
                                   **platform_values(platform)), timeout=240)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert "cluster: the 2 nodes never all met: 1 other node (ranks 1 to 1) did not all join" in log
    assert "within RENDEZVOUS_TIMEOUT_S=3s" in log
    assert platform.types() == ["job_failed"]
    assert "never all met" in platform.alerts[0]["error_message"]
    assert json.loads((out / "job_state.json").read_text())["status"] == "failed"
    # a worker whose primary never answers fails the same way (torchrun's client gives up after the
    # same timeout) and leaves the alert to node 0
    worker = Cluster("kubeflow", 2, 1, "127.0.0.1", 29500, rendezvous_timeout_s=3)
    assert launch_failure(worker, out, 1) == never_joined_message(worker)
    assert "this node (rank 1) could not join the rendezvous at the primary 127.0.0.1:29500" in launch_failure(
        worker, out, 1)
    mark_joined(out)
    assert launch_failure(worker, out, 1) is None and launch_failure(worker, out, 1) is not None  # read once
    assert launch_failure(worker, out, 143) is None  # stopped, not failed
    mark_joined(out)
    lost = launch_failure(worker, out, 1, recorded="RuntimeError: [pair.cc:553] Connection closed by peer [10.65.0.3]:4123.")
    assert lost.startswith("cluster: node 1 of 2 lost the cluster: the node at 10.65.0.3 (its NODE_ADDR) went away")
    mark_joined(out)
    assert launch_failure(worker, out, 1, recorded="ValueError: a bug") is None  # its own error says it all


@pytest.mark.slow
@pytest.mark.distributed
def test_sigterm_on_every_node_stops_the_cluster_with_143_and_a_restart_resumes(tmp_path, platform):
    """The cluster stopped (RunPod sends SIGTERM to every pod): each node exits 143, its state stays
    running, no job_failed; started again, every node resumes from the newest checkpoint complete on
    all of them and the job completes with every round stored once by node 0."""
    import signal

    port, outs = free_port(), [tmp_path / "node0", tmp_path / "node1"]
    training = {**TRAINING, "max_steps": 20, "save_steps": 5}
    predictions = {**PREDICTIONS, "sample_count": 4, "step_interval": 10}
    envs = [node_env(out, runpod(rank, port), TRAINING_CONFIG=training, PREDICTIONS_CONFIG=predictions,
                     **platform_values(platform)) for rank, out in enumerate(outs)]
    nodes = [start(env) for env in envs]
    try:
        assert wait_for(lambda: all((out / "checkpoint-5" / "COMPLETE").exists() for out in outs), timeout=240,
                        interval=0.1), "no checkpoint on both nodes"
    finally:
        for node in nodes:
            node.send_signal(signal.SIGTERM)  # the entrypoint forwards it to its training processes
    logs = finish_all(nodes)
    assert [p.returncode for p in nodes] == [143, 143], "\n".join(log[-3000:] for log in logs)
    assert all(json.loads((out / "job_state.json").read_text())["status"] == "running" for out in outs)
    assert "job_failed" not in platform.types()

    nodes = [start(env) for env in envs]
    logs = finish_all(nodes)
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(log[-3000:] for log in logs)
    assert all("resume: from checkpoint-" in log or "resuming from checkpoint-" in log for log in logs), logs[0][-3000:]
    keys = Counter((r["step"], r["sample_index"]) for r in spool_rows(outs[0]))
    assert set(keys) == {(s, i) for s in (0, 10, 20) for i in range(4)} and set(keys.values()) == {1}
    assert platform.types()[-1] == "job_completed" and "job_failed" not in platform.types()


@pytest.mark.slow
@pytest.mark.distributed
def test_a_node_killed_mid_run_ends_the_others_and_fails_the_job_once(tmp_path, platform):
    port, outs = free_port(), [tmp_path / "node0", tmp_path / "node1"]
    training = {**TRAINING, "max_steps": 100000, "save_strategy": "no"}
    envs = [node_env(out, runpod(rank, port), TRAINING_CONFIG=training, **platform_values(platform))
            for rank, out in enumerate(outs)]
    primary, other = start(envs[0]), start(envs[1])
    seen = []
    for line in other.stdout:
        seen.append(line)
        if line.startswith("{'loss'"):  # both nodes are training
            break
    kill_tree_hard(other)  # the pod is gone: its processes die without a word
    log = finish_all([primary], timeout=240)[0]
    assert primary.returncode not in (0, 143), log[-3000:]
    assert wait_for(lambda: platform.types() == ["job_started", "job_failed"], timeout=10), platform.types()
    error = platform.alerts[-1]["error_message"]
    assert "cluster: node 0 of 2 lost the cluster: the node at 127.0.0.1 (its NODE_ADDR) went away" in error, error
    assert json.loads((outs[0] / "job_state.json").read_text())["status"] == "failed"
