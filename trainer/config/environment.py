"""The environment as pydantic-settings reads it, the table of every variable the image reads
(what it is for, the mode that needs it, whether it is a secret), and where secrets are kept.

This module imports nothing of the project but the demo's name: trainer/redact.py reads the secret
variables' names from `VARIABLES`, and everything that prints goes through it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from trainer.demo import DEMO_MODEL


def db_url_problem(url: str) -> str | None:
    """Why a database URL cannot be used as written, never quoting it; None when it can. libpq takes
    what follows the first `@` for the host and prints it when it cannot resolve it: a password's end."""
    if "://" in url and url.split("://", 1)[1].split("/", 1)[0].count("@") > 1:
        return ("the password holds an unencoded '@': percent-encode it as %40 "
                "(postgresql://user:p%40ss@host:5432/postgres)")
    return None


class Environment(BaseSettings):
    """The raw environment, read by pydantic-settings. JSON variables stay text here so that a
    malformed one can be reported with its position; `load_config` parses them."""

    # An empty variable (`KEY=` in an env file, "" in a template) means unset. Surrounding
    # whitespace (a value pasted with a space or a newline) is not part of a name, path or URL:
    # stripped, so that MODEL_NAME=' demo' is the demo, not a model called " demo".
    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", env_ignore_empty=True,
                                      str_strip_whitespace=True)

    JOB_ID: str | None = None
    USER_ID: str | None = None
    MODEL_NAME: str = DEMO_MODEL
    DATASET_PATH: str | None = None
    DATASET_URL: str | None = None
    EVAL_DATASET_PATH: str | None = None
    OUTPUT_DIR: str | None = None
    TRAINING_CONFIG: str | None = None
    PREDICTIONS_CONFIG: str | None = None
    SUPABASE_URL: str | None = None
    SUPABASE_SERVICE_KEY: SecretStr | None = None
    SUPABASE_ANON_KEY: SecretStr | None = None
    SUPABASE_DB_URL: SecretStr | None = None
    NUM_PROCESSES: int | None = Field(None, gt=0)
    RUNPOD_GPU_COUNT: int | None = Field(None, ge=0)
    JOB_TOKEN: SecretStr | None = None
    METRICS_API_URL: str | None = None
    ALERT_API_URL: str | None = None
    INTERNAL_API_KEY: SecretStr | None = None
    HF_TOKEN: SecretStr | None = None
    HF_REPO_NAME: str | None = None
    FRESH_RUN: bool = False

    @field_validator("SUPABASE_SERVICE_KEY", "SUPABASE_ANON_KEY", "JOB_TOKEN", "INTERNAL_API_KEY", "HF_TOKEN",
                     "SUPABASE_DB_URL", mode="before")
    @classmethod
    def _one_line_secret(cls, value, info):
        """A secret pasted from a file keeps its trailing newline: stripped here, or an HTTP client
        would refuse it as a header and print it inside its error. Whitespace left inside a key or
        token is refused (the message never shows the value); a DB URL may be libpq's `k=v k=v`."""
        if not isinstance(value, str):
            return value
        value = value.strip()
        if info.field_name == "SUPABASE_DB_URL" and db_url_problem(value):
            raise ValueError(db_url_problem(value))
        if info.field_name != "SUPABASE_DB_URL" and any(c.isspace() or not c.isprintable() for c in value):
            raise ValueError("holds a space, line break or control character inside; a key or token is one "
                             "line of text: paste it again without them")
        return value


#: What each variable is for, the mode that needs it, and whether it is a secret. The startup
#: report, .env.example, runpod.json and the README's table are checked against this list.
VARIABLES: dict[str, tuple[str, str, bool]] = {
    "JOB_ID": ("the job; every prediction row and platform call carries it (any text)", "database", False),
    "USER_ID": ("the job's owner; only they can read its predictions (a UUID)", "database", False),
    "MODEL_NAME": (f'Hugging Face id or local path; "{DEMO_MODEL}" = the bundled demo model', "all", False),
    "DATASET_PATH": ("training data: JSON / JSONL file (plain or gzip) or https URL", "all (not the demo)", False),
    "DATASET_URL": ("the platform's name for the training data URL (signed, gzip); same as DATASET_PATH", "all (not the demo)", False),
    "EVAL_DATASET_PATH": ("evaluation data: JSON / JSONL file or https URL", "optional", False),
    "OUTPUT_DIR": ("checkpoints, final model, predictions.jsonl (the image: /workspace/outputs)", "all", False),
    "TRAINING_CONFIG": ("JSON: this image's flat keys, or the platform's nested job configuration", "all", False),
    "PREDICTIONS_CONFIG": ("JSON: enabled, sample_count, sample_frequency, generation, …", "predictions", False),
    "SUPABASE_URL": ("the Supabase project URL: predictions written through its API", "database (supabase)", False),
    "SUPABASE_SERVICE_KEY": ("the service_role key: the only key RLS lets write", "database (supabase)", True),
    "SUPABASE_ANON_KEY": ("reported only, never used to write (RLS rejects it)", "none", True),
    "SUPABASE_DB_URL": ("Postgres URL: migrations; the direct writer when SUPABASE_URL is unset", "database (postgres)", True),
    "NUM_PROCESSES": ("training processes; default one per visible GPU, one on a CPU", "optional", False),
    "RUNPOD_GPU_COUNT": ("set by RunPod: GPUs of the pod (the default process count)", "optional", False),
    "JOB_TOKEN": ("the job's token: Authorization: Bearer on the platform's metrics calls", "platform (metrics)", True),
    "METRICS_API_URL": ("the platform's metrics route: loss curves and progress are POSTed there", "platform (metrics)", False),
    "ALERT_API_URL": ("the platform's alert route: job_started / job_completed / job_failed", "platform (alerts)", False),
    "INTERNAL_API_KEY": ("X-API-Key on the alert calls", "platform (alerts)", True),
    "HF_TOKEN": ("Hugging Face token: gated models, and the upload to HF_REPO_NAME", "optional", True),
    "HF_REPO_NAME": ("Hub repository the final model / adapter is uploaded to at the end", "optional", False),
    "FRESH_RUN": ("1: start the job over once (previous outputs moved aside) even if it completed or failed", "optional", False),
}

#: The image's own defaults (set in the Dockerfile), used when OUTPUT_DIR / HF_HOME are unset OR
#: empty: an env file's `OUTPUT_DIR=` must not move the outputs off the volume.
IMAGE_OUTPUT_DIR, IMAGE_HF_HOME = "IMAGE_OUTPUT_DIR", "IMAGE_HF_HOME"


@dataclass(frozen=True)
class Secrets:
    """The secret values, apart from everything that gets logged or saved."""

    supabase_service_key: SecretStr | None
    supabase_anon_key: SecretStr | None
    supabase_db_url: SecretStr | None
    job_token: SecretStr | None = None
    internal_api_key: SecretStr | None = None
    hf_token: SecretStr | None = None


def image_default(variable: str, image_variable: str, fallback: str | None) -> tuple[str | None, str]:
    """`variable`'s value, or the image's default when it is unset or empty, and which it was."""
    value = os.environ.get(variable, "").strip()
    if value:
        return value, "set"
    image = os.environ.get(image_variable, "").strip()
    if image:
        return image, f"the image's default, {image_variable}"
    return fallback, "default"
