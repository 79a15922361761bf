"""The image itself, built from the real Dockerfile and run as a user runs it (marker `docker`).

Where no Docker engine answers, every test here skips with the reason. The engine is the one at
DOCKER_TEST_HOST (what `bash scripts/docker-engine.sh` starts and prints; .ci/run does this), else
the client's default. The CUDA base cannot be pulled here, so the image is built on a local
stand-in (`scripts/docker-standin-base.sh`: debootstrap'ed Debian 12, Python 3.11, the CPU torch
wheel from this disk; no registry image), made once and reused by its tag. Then, as a user would:
`docker run --env-file` with `.env.example` copied unchanged and the volume on /workspace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e import QUICK_TRAINING, ROOT, spool_rows, wait_for
from tests.platform_double import PlatformDouble
from tests.platform_launch import (
    ARGV,
    POD_DATASET_PATH,
    ROUTE_ANON_KEY,
    demo_job,
    deploy_env_vars,
    generate_training_config,
    gzipped_demo_rows,
    pod_environment,
    runpod_script,
    supabase_with_job,
)
from tests.postgrest_double import PostgrestDouble
from tests.procs import processes_with
from trainer.checkpoints import MARKER
from trainer.demo import DEMO_TRAINING

pytestmark = [pytest.mark.docker, pytest.mark.slow]

IMAGE = "finetune-predictions:test"
LABEL = "finetune-predictions-test=1"  # on what the suite builds, so that only that is pruned

PREDICTIONS = {"enabled": True, "sample_count": 5, "sample_frequency": "steps", "step_interval": 10, "max_new_tokens": 6,
               "baseline": False}  # the demo's baseline round stays unless named
TRAINING = {**QUICK_TRAINING, "max_steps": 200, "save_steps": 50}
EXPECTED = {(s, i) for s in range(10, 201, 10) for i in range(5)}


def docker(env: dict[str, str], *args: str, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess:
    """`docker ARGS`, its output as text; `check` fails the test with the output on a non-zero exit."""
    try:
        done = subprocess.run(["docker", *args], env=env, text=True, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"`docker {' '.join(args[:3])} …` did not finish within {timeout:g}s: {str(e.stdout)[-2000:]}")
    if check and done.returncode != 0:
        pytest.fail(f"`docker {' '.join(args)}` exited {done.returncode}:\n{(done.stdout + done.stderr)[-4000:]}")
    return done


def docker_run(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`docker run --rm ARGS` to its end; a container left by a timeout is removed all the same."""
    name = f"finetune-test-{uuid.uuid4().hex[:8]}"
    try:
        return docker(env, "run", "--rm", "--name", name, *args, timeout=timeout)
    finally:
        docker(env, "rm", "-f", name)


@pytest.fixture(scope="session")
def docker_env() -> dict[str, str]:
    """The environment that points the docker client at an engine that answers; skips otherwise."""
    if shutil.which("docker") is None:
        pytest.skip("no docker client on PATH (apt-get install docker.io; .ci/run does it)")
    env = dict(os.environ, DOCKER_BUILDKIT="0")  # the classic builder: no buildx plugin needed
    if os.environ.get("DOCKER_TEST_HOST"):
        env["DOCKER_HOST"] = os.environ["DOCKER_TEST_HOST"]
    try:
        probe = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], env=env, text=True,
                               capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.skip("the Docker engine did not answer within 30 s")
    if probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or ["no answer"])[-1]
        pytest.skip(f"no Docker engine answers ({why}); `bash scripts/docker-engine.sh` starts one as root, "
                    "and DOCKER_TEST_HOST=<what it prints> points the tests at it")
    return env


@pytest.fixture(scope="session")
def base_image(docker_env) -> str:
    """The stand-in base's tag, built the first time only (minutes), then reused (a second)."""
    try:
        made = subprocess.run(["bash", str(ROOT / "scripts" / "docker-standin-base.sh")], env=docker_env,
                              text=True, capture_output=True, timeout=1200)
    except subprocess.TimeoutExpired:
        pytest.fail("the stand-in base took more than 20 minutes")
    if made.returncode == 2:  # the script's code for "no torch wheel on this disk"
        pytest.skip(made.stderr.strip().splitlines()[-1])
    if made.returncode != 0:
        pytest.fail(f"the stand-in base failed:\n{made.stderr[-4000:]}")
    return made.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def image(docker_env, base_image) -> str:
    """The real Dockerfile built on the stand-in base (layer cache: a warm rebuild takes seconds)."""
    docker(docker_env, "build", "--build-arg", f"BASE_IMAGE={base_image}", "--label", LABEL, "-t", IMAGE, str(ROOT),
           timeout=1200, check=True)
    yield IMAGE
    # Earlier builds of the tag, left dangling by this one; only the suite's own.
    docker(docker_env, "image", "prune", "-f", "--filter", f"label={LABEL}")


@pytest.fixture
def env_file(tmp_path) -> Path:
    """.env.example copied unchanged, as the README tells a user to start."""
    path = tmp_path / ".env"
    shutil.copyfile(ROOT / ".env.example", path)
    return path


def test_the_build_context_holds_no_secret(docker_env, base_image, tmp_path):
    ctx = tmp_path / "ctx"
    wanted = ["requirements.txt", "entrypoint.py", "trainer/a.py", "predictions/b.py", "sql/001.sql"]
    unwanted = [".env", ".env.production", ".env.example", "trainer/.env", "workspace/outputs/predictions.jsonl",
                "outputs/predictions.jsonl", ".venv/bin/python", ".git/config", "tests/test_a.py", "bench/b.py",
                "trainer/__pycache__/a.cpython-311.pyc", "notes.md"]
    for name in wanted + unwanted:
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text("SUPABASE_SERVICE_KEY=secret\n")
    shutil.copyfile(ROOT / ".dockerignore", ctx / ".dockerignore")
    (ctx / "Dockerfile").write_text(f"FROM {base_image}\nCOPY . /ctx\nRUN find /ctx -type f | sort\n")
    built = docker(docker_env, "build", "--no-cache", "--label", LABEL, "-t", "finetune-context-probe:test", str(ctx),
                   check=True)
    sent = sorted(line[len("/ctx/"):] for line in built.stdout.splitlines() if line.startswith("/ctx/"))
    assert sent == sorted(wanted)
    docker(docker_env, "rmi", "-f", "finetune-context-probe:test")


def test_the_image_keeps_the_base_torch_and_installs_the_pins(docker_env, image):
    probe = ("import importlib.metadata as m, shutil, torch; "
             "print(torch.__version__, m.version('transformers'), m.version('accelerate'), shutil.which('tini'))")
    probe_run = docker_run(docker_env, "--entrypoint", "python", image, "-c", probe)
    assert probe_run.returncode == 0, probe_run.stderr[-3000:]
    out = probe_run.stdout.split()
    pins = dict(line.split("#")[0].strip().split("==") for line in (ROOT / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert out == ["2.13.0+cpu", pins["transformers"], pins["accelerate"], "/usr/bin/tini"]
    config = json.loads(docker(docker_env, "image", "inspect", image, check=True).stdout)[0]["Config"]
    assert config["Entrypoint"][:2] == ["/usr/bin/tini", "--"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["IMAGE_OUTPUT_DIR"] == env["OUTPUT_DIR"] == "/workspace/outputs"
    assert env["IMAGE_HF_HOME"] == env["HF_HOME"] == "/workspace/hf"


def test_check_exits_0_and_a_bad_variable_78_with_its_message(docker_env, image, env_file):
    ok = docker_run(docker_env, "--env-file", str(env_file), image, "check", timeout=300)
    assert ok.returncode == 0, (ok.stdout + ok.stderr)[-3000:]
    assert "check: configuration, data and database are ready; nothing was trained" in ok.stdout

    bad = docker_run(docker_env, "--env-file", str(env_file), "-e", "NUM_PROCESSES=zero", image, timeout=300)
    assert bad.returncode == 78, (bad.stdout + bad.stderr)[-3000:]
    assert "configuration error: NUM_PROCESSES" in bad.stdout
    assert "got 'zero'" in bad.stdout


# Issue 10 item 2: `OUTPUT_DIR=` (empty) in .env.example must not move the outputs off the volume:
# trainer/config/load.py falls back to the image's IMAGE_OUTPUT_DIR.


def test_the_demo_with_the_example_env_file_writes_everything_to_the_volume(docker_env, image, env_file, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    # The demo as it ships, for one epoch instead of eight, with checkpoints (it saves none).
    training = {**DEMO_TRAINING, "num_train_epochs": 1, "save_strategy": "steps", "save_steps": 50}
    started = time.monotonic()
    run = docker_run(docker_env, "--env-file", str(env_file), "-e", f"TRAINING_CONFIG={json.dumps(training)}",
                     "-v", f"{ws}:/workspace", image, timeout=1200)
    seconds = time.monotonic() - started
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    out = ws / "outputs"
    rows = spool_rows(out)
    assert sorted(Counter(r["step"] for r in rows).values()) == [24, 24], log[-3000:]  # baseline + the epoch
    saved = [int(p.parent.name.split("-")[1]) for p in out.glob(f"checkpoint-*/{MARKER}")]
    assert saved and max(saved) >= 150, saved  # the newest kept (save_total_limit prunes older ones)
    assert (out / "final" / "config.json").exists() and list((out / "final").glob("*.safetensors"))
    print(f"demo (1 epoch) in the container: {seconds:.0f}s")


def test_docker_stop_keeps_the_spool_and_a_second_run_resumes(docker_env, image, env_file, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    out = ws / "outputs"
    name = f"finetune-test-{uuid.uuid4().hex[:8]}"
    job = ["--env-file", str(env_file), "-v", f"{ws}:/workspace", "-e", "OUTPUT_DIR=/workspace/outputs",
           "-e", f"TRAINING_CONFIG={json.dumps(TRAINING)}", "-e", f"PREDICTIONS_CONFIG={json.dumps(PREDICTIONS)}"]
    try:
        docker(docker_env, "run", "-d", "--name", name, *job, image, check=True)
        assert wait_for(lambda: (out / "checkpoint-50" / MARKER).exists(), timeout=900, interval=0.2), \
            docker(docker_env, "logs", name).stdout[-3000:]
        assert "trainer.train" in docker(docker_env, "top", name, "-o", "pid,args").stdout  # training, not done
        full_id = docker(docker_env, "inspect", "-f", "{{.Id}}", name, check=True).stdout.strip()

        docker(docker_env, "stop", "-t", "60", name, timeout=120, check=True)
        state = json.loads(docker(docker_env, "inspect", "-f", "{{json .State}}", name, check=True).stdout)
        logs = docker(docker_env, "logs", name)
        log = logs.stdout + logs.stderr
        # 143 = 128 + SIGTERM: the entrypoint stopped its training processes and exited itself;
        # had it hung, docker would have killed it after 60 s (137).
        assert (state["ExitCode"], state["OOMKilled"]) == (143, False), log[-3000:]
        assert "entrypoint: got SIGTERM; stopping the training processes" in log
        assert not processes_with(full_id, "cgroup"), "processes of the stopped container are still running"
    finally:
        docker(docker_env, "rm", "-f", name)

    first = spool_rows(out)  # every line parses: the stop tore none
    steps = {r["step"] for r in first}
    assert {10, 20, 30, 40} <= steps and max(steps) < 200, sorted(steps)

    again = docker_run(docker_env, *job, image, timeout=1200)
    log = again.stdout + again.stderr
    assert again.returncode == 0, log[-4000:]
    assert int(log.split("resume: from checkpoint-")[1].split()[0]) >= 50, log[-3000:]
    assert (out / "final" / "config.json").exists()
    keys = Counter((r["step"], r["sample_index"]) for r in spool_rows(out))
    assert set(keys) == EXPECTED  # the same set as an uninterrupted run
    assert sum(n - 1 for n in keys.values()) < PREDICTIONS["sample_count"]  # at most the stopped round again


def test_the_platforms_pod_request_trains_the_job_in_the_image(docker_env, image, tmp_path):
    """`docker run` as RunPod starts the platform's pod: the image with the deploy route's dockerArgs
    as its arguments, the route's variables (TRAINING_SCRIPT_B64 as its script builder builds it),
    the volume on /workspace; the Supabase API (with the job's row) and the platform's routes as
    doubles on the host's loopback (host network). The model also lands in /workspace/fine_tuned_model."""
    job, owner, token, key, service = (str(uuid.uuid4()), "11111111-1111-4111-8111-111111111111", "job-token",
                                       "internal-key", "sb_secret_docker-test")
    ws = tmp_path / "ws"
    (ws / "input").mkdir(parents=True)
    gzipped_demo_rows(ws / "input" / "dataset.jsonl.gz")
    config = demo_job(json.loads((ROOT / "tests" / "platform_configs" / "stored_sft_predictions_eval.json").read_text()))
    table = PostgrestDouble()
    database = supabase_with_job(table, job_id=job, service_key=service, config=config)
    platform = PlatformDouble(job, token, key)
    try:
        script = runpod_script(generate_training_config("demo", POD_DATASET_PATH, config), "", None, job)
        variables = pod_environment(script, training_config_id="cfg-1", env_vars=deploy_env_vars(
            job_id=job, job_token=token, user_id=owner, supabase_url=database.url, anon_key=ROUTE_ANON_KEY,
            service_key=service, dataset_url="/workspace/input/dataset.jsonl.gz", model_name="demo",
            app_url=platform.url, internal_api_key=key))
        run = docker_run(docker_env, "--network", "host", "-v", f"{ws}:/workspace",
                         *[a for k, v in variables.items() for a in ("-e", f"{k}={v}")], image, *ARGV, timeout=1200)
    finally:
        database.close()
        platform.close()
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    assert "platform launch: started with the platform's bootstrap arguments" in log
    assert sorted({r["step"] for r in table.rows}) == [0, 6, 12] and {r["job_id"] for r in table.rows} == {job}
    assert platform.types() == ["job_started", "job_completed"], (platform.alerts, platform.refused)
    assert (ws / "outputs" / "final" / "adapter_model.safetensors").exists()
    assert (ws / "fine_tuned_model" / "adapter_model.safetensors").exists(), log[-2000:]
    assert not (ws / "run_training.sh").exists() and not (ws / "config.json").exists()  # read, never written or run


def test_two_containers_with_host_networking_are_a_cluster_of_two_nodes(docker_env, image, env_file, tmp_path):
    """A RunPod Instant Cluster of two pods, as two containers of the image on this host's network
    (127.0.0.1 the primary), each with its own volume: node 0 alone writes every round, once."""
    from tests.ports import free_port

    port, names = free_port(), [f"finetune-test-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    volumes = [tmp_path / "ws0", tmp_path / "ws1"]
    predictions = {**PREDICTIONS, "step_interval": 5}
    training = {**TRAINING, "max_steps": 10, "save_steps": 5}
    try:
        for rank, (name, ws) in enumerate(zip(names, volumes)):
            ws.mkdir()
            cluster = {"PRIMARY_ADDR": "127.0.0.1", "PRIMARY_PORT": str(port), "NODE_RANK": str(rank),
                       "NUM_NODES": "2", "NUM_TRAINERS": "1", "WORLD_SIZE": "2", "NODE_ADDR": f"127.0.0.{rank + 1}",
                       "GLOO_SOCKET_IFNAME": "lo", "RENDEZVOUS_TIMEOUT_S": "300"}
            docker(docker_env, "run", "-d", "--name", name, "--network", "host", "--env-file", str(env_file),
                   "-v", f"{ws}:/workspace", "-e", f"TRAINING_CONFIG={json.dumps(training)}",
                   "-e", f"PREDICTIONS_CONFIG={json.dumps(predictions)}",
                   *[a for k, v in cluster.items() for a in ("-e", f"{k}={v}")], image, check=True)
        codes = [docker(docker_env, "wait", name, timeout=1200).stdout.strip() for name in names]
        logs = [docker(docker_env, "logs", name) for name in names]
        assert codes == ["0", "0"], "\n".join((log.stdout + log.stderr)[-3000:] for log in logs)
    finally:
        for name in names:
            docker(docker_env, "rm", "-f", name)
    rows = Counter((r["step"], r["sample_index"]) for r in spool_rows(volumes[0] / "outputs"))
    assert set(rows) == {(s, i) for s in (5, 10) for i in range(5)} and set(rows.values()) == {1}
    assert not spool_rows(volumes[1] / "outputs")
    assert "this node is rank 1 of 2 nodes (a worker)" in logs[1].stdout
    assert (volumes[1] / "outputs" / "checkpoint-10" / MARKER).exists()
