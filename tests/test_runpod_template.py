"""runpod.json is the body of RunPod's REST template-create call (POST /v1/templates): only the
fields that call takes, in their types, and an env the image accepts as the platform fills it."""

from __future__ import annotations

import json
import re

import pytest

from tests.e2e import ROOT
from tests.env import set_job_env
from trainer.config.environment import VARIABLES
from trainer.config.errors import ConfigError
from trainer.config.load import load_config

# RunPod's TemplateCreateInput (REST v1): field → type. name and imageName are required; any
# other key is refused by the API, so a typo here would fail only at deploy time.
FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str, "imageName": str, "category": str, "containerDiskInGb": int, "containerRegistryAuthId": str,
    "dockerEntrypoint": list, "dockerStartCmd": list, "env": dict, "isPublic": bool, "isServerless": bool,
    "ports": list, "readme": str, "volumeInGb": int, "volumeMountPath": str,
}
REQUIRED = {"name", "imageName"}
CATEGORIES = {"NVIDIA", "AMD", "CPU"}
PORT = re.compile(r"^\d{1,5}/(http|tcp)$")  # RunPod exposes ports as "8888/http" or "22/tcp"
SECRET_REF = re.compile(r"\{\{ RUNPOD_SECRET_([A-Za-z0-9_]+) \}\}")

# What the platform sets per pod (app/api/training/deploy/runpod/route.ts): the job, its owner and
# the Supabase project with both keys; never a database URL.
PLATFORM_POD_ENV = {
    "JOB_ID": "0b6f4a4e-3a4b-4c1f-9d0e-1f2a3b4c5d6e",
    "USER_ID": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
    "SUPABASE_URL": "https://abcdefghijklmnop.supabase.co",
    "SUPABASE_ANON_KEY": "anon-key-from-the-platform",
    "SUPABASE_SERVICE_KEY": "service-key-from-the-platform",
}


def template() -> dict:
    return json.loads((ROOT / "runpod.json").read_text())


def check_template(body: dict) -> list[str]:
    """Everything RunPod's template-create call would refuse or misread, as messages."""
    problems = [f"unknown field {k!r}" for k in body if k not in FIELDS]
    problems += [f"missing required field {k!r}" for k in REQUIRED if k not in body]
    for key, value in body.items():
        want = FIELDS.get(key)
        if want is None:
            continue
        # bool is an int in Python: a true/false where a size belongs is still wrong
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            problems.append(f"{key}: expected {want.__name__}, got {type(value).__name__}")
    for key in ("dockerEntrypoint", "dockerStartCmd"):
        if isinstance(body.get(key), list) and not all(isinstance(x, str) for x in body[key]):
            problems.append(f"{key}: must be a list of strings")
    for port in body.get("ports", []) if isinstance(body.get("ports"), list) else []:
        if not isinstance(port, str) or not PORT.match(port):
            problems.append(f"ports: {port!r} is not 'N/http' or 'N/tcp'")
    env = body.get("env", {})
    if isinstance(env, dict):
        problems += [f"env.{k}: values are strings, got {type(v).__name__}" for k, v in env.items() if not isinstance(v, str)]
    if "category" in body and body["category"] not in CATEGORIES:
        problems.append(f"category: {body['category']!r} is not one of {sorted(CATEGORIES)}")
    for key in ("containerDiskInGb", "volumeInGb"):
        if isinstance(body.get(key), int) and body[key] < 0:
            problems.append(f"{key}: must not be negative")
    return problems


def test_runpod_json_has_only_template_create_fields_in_their_types():
    assert check_template(template()) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"imageNmae": "x"}, "unknown field 'imageNmae'"),
        ({"containerDiskInGb": "30"}, "containerDiskInGb: expected int, got str"),
        ({"volumeInGb": True}, "volumeInGb: expected int, got bool"),
        ({"ports": "22/tcp"}, "ports: expected list, got str"),
        ({"ports": ["22"]}, "ports: '22' is not 'N/http' or 'N/tcp'"),
        ({"env": {"NUM_PROCESSES": 2}}, "env.NUM_PROCESSES: values are strings, got int"),
        ({"env": [{"key": "JOB_ID", "value": ""}]}, "env: expected dict, got list"),
        ({"category": "GPU"}, "category: 'GPU' is not one of ['AMD', 'CPU', 'NVIDIA']"),
        ({"dockerStartCmd": "run"}, "dockerStartCmd: expected list, got str"),
    ],
)
def test_the_check_refuses_what_runpod_refuses(change, problem):
    assert problem in check_template({**template(), **change})


def test_no_port_is_exposed_because_the_image_runs_no_server():
    # No SSH server, no HTTP server in the image: an exposed port would be an open door to nothing.
    assert template()["ports"] == []


def test_supabase_comes_from_one_source_and_hf_token_from_a_secret():
    env = template()["env"]
    refs = {k: SECRET_REF.fullmatch(v).group(1) for k, v in env.items() if SECRET_REF.fullmatch(v)}
    # Both Supabase variables from RunPod secrets, never one set beside an empty other (refused as
    # half-configured); no database URL, as the platform passes none.
    assert refs.get("SUPABASE_URL") == "SUPABASE_URL" and refs.get("SUPABASE_SERVICE_KEY") == "SUPABASE_SERVICE_KEY"
    assert env["SUPABASE_DB_URL"] == ""
    assert env["OUTPUT_DIR"] == "/workspace/outputs"
    if "HF_TOKEN" in VARIABLES:  # gated models: the token from RunPod's secret store
        assert env["HF_TOKEN"] == "{{ RUNPOD_SECRET_HF_TOKEN }}"


def _load(monkeypatch, env: dict[str, str]):
    set_job_env(monkeypatch, None, **env)  # no OUTPUT_DIR of ours: the template's env sets it
    return load_config()


def resolved(secrets: dict[str, str]) -> dict[str, str]:
    """The template's env as RunPod hands it to the container, its secrets replaced."""
    return {k: SECRET_REF.sub(lambda m: secrets.get(m.group(1), ""), v) for k, v in template()["env"].items()}


def test_the_image_accepts_the_template_as_the_platform_fills_it(monkeypatch):
    cfg = _load(monkeypatch, {**resolved({}), **PLATFORM_POD_ENV})
    assert cfg.storage == "supabase"


def test_the_image_accepts_the_template_with_its_secrets_and_a_job(monkeypatch):
    secrets = {"SUPABASE_URL": "https://abcdefghijklmnop.supabase.co", "SUPABASE_SERVICE_KEY": "sb_secret_x"}
    env = {**resolved(secrets), "JOB_ID": PLATFORM_POD_ENV["JOB_ID"], "USER_ID": PLATFORM_POD_ENV["USER_ID"]}
    assert _load(monkeypatch, env).storage == "supabase"


def test_the_template_without_its_secrets_runs_locally_not_half_configured(monkeypatch):
    try:
        cfg = _load(monkeypatch, resolved({}))
    except ConfigError as e:
        pytest.fail(f"the template alone is refused: {e}")
    assert cfg.storage == "local"
