"""Which of the platform's calls are on: metrics (METRICS_API_URL + JOB_TOKEN), alerts
(ALERT_API_URL [+ INTERNAL_API_KEY]) and the Hub upload (HF_REPO_NAME + HF_TOKEN), read from the
environment with the rest of the configuration. A half-set pair is a configuration error naming
what is missing. trainer/pod/platform.py makes the calls."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pydantic import SecretStr

from trainer.config.environment import Environment
from trainer.config.errors import ConfigError
from trainer.fetch import is_url


@dataclass(frozen=True)
class PlatformCalls:
    """Where the platform's calls go. Secrets are SecretStr (their repr is '**********')."""

    job_id: str | None
    user_id: str | None
    model_name: str | None
    metrics_url: str | None
    alert_url: str | None
    job_token: SecretStr | None
    alert_key: SecretStr | None
    hf_repo: str | None
    hf_token: SecretStr | None

    @property
    def metrics_on(self) -> bool:
        return bool(self.metrics_url and self.job_token)

    @property
    def alerts_on(self) -> bool:
        return bool(self.alert_url and self.job_id and self.user_id)


def platform_calls(env: Environment) -> PlatformCalls:
    """The platform's calls from the environment . A half-set pair
    is a ConfigError naming what is missing."""
    metrics, token, alert, key = env.METRICS_API_URL, env.JOB_TOKEN, env.ALERT_API_URL, env.INTERNAL_API_KEY
    if metrics and not token:
        raise ConfigError("JOB_TOKEN", "not set, but METRICS_API_URL is: the platform's metrics route answers 401 "
                          "without `Authorization: Bearer <JOB_TOKEN>`; set both, or neither to leave metrics off")
    if token and not metrics:
        raise ConfigError("METRICS_API_URL", "not set, but JOB_TOKEN is: set the platform's metrics route "
                          "(<app>/api/training/local/metrics), or neither to leave metrics off")
    if key and not alert:
        raise ConfigError("ALERT_API_URL", "not set, but INTERNAL_API_KEY is: set the platform's alert route "
                          "(<app>/api/alerts/trigger), or neither to leave alerts off")
    for name, url in (("METRICS_API_URL", metrics), ("ALERT_API_URL", alert)):
        if url and not is_url(url):
            raise ConfigError(name, f"must be an http(s) URL, got {url!r}")
    if (metrics or alert) and not env.JOB_ID:
        raise ConfigError("JOB_ID", "not set; the platform's metrics and alert routes identify the job by it")
    if alert and not env.USER_ID:
        raise ConfigError("USER_ID", "not set; the platform's alert route refuses an alert without user_id (400)")
    if env.HF_REPO_NAME and not env.HF_TOKEN:
        raise ConfigError("HF_TOKEN", "not set, but HF_REPO_NAME is: uploading to the Hub needs a token with write access")
    return PlatformCalls(env.JOB_ID, env.USER_ID, env.MODEL_NAME, metrics, alert, token, key,
                         env.HF_REPO_NAME, env.HF_TOKEN)


def calls_from_raw_environment() -> PlatformCalls:
    """The alert settings straight from os.environ, for a configuration that failed to parse."""
    get = lambda name: os.environ.get(name) or None  # noqa: E731 (an empty variable means unset)
    key = get("INTERNAL_API_KEY")
    return PlatformCalls(get("JOB_ID"), get("USER_ID"), get("MODEL_NAME"), None, get("ALERT_API_URL"), None,
                         SecretStr(key) if key else None, None, None)
