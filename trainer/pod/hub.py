"""The upload of the final model (or adapter) to HF_REPO_NAME at the end, as a private repository.
Never fatal: a failure is logged and the model stays on the volume."""

from __future__ import annotations

import logging

from trainer.config.job import JobConfig
from trainer.redact import hide

log = logging.getLogger(__name__)


def upload_to_hub(cfg: JobConfig) -> bool:
    """Upload the final model (the merged one when there is one) to HF_REPO_NAME. Never fatal:
    a failure is logged and the model stays on the volume."""
    calls = cfg.platform
    if calls is None or not calls.hf_repo or not calls.hf_token:
        return False
    folder = cfg.output_dir / "final-merged"
    if not folder.is_dir():
        folder = cfg.output_dir / "final"
    token = calls.hf_token.get_secret_value()
    log.info(f"hub upload: {folder} → {calls.hf_repo} (private)")
    try:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(calls.hf_repo, private=True, exist_ok=True)
        api.upload_folder(repo_id=calls.hf_repo, folder_path=str(folder), commit_message=f"job {cfg.job_id}")
    # The Hub client raises HTTP errors, OSError and ValueError alike; none of them may fail a
    # job whose model is trained and saved.
    except Exception as e:  # noqa: BLE001
        message = hide(f"{type(e).__name__}: {e}", token, name="<HF_TOKEN>").splitlines()[0][:500]
        log.info(f"hub upload: FAILED ({message}); the model stays in {folder}")
        return False
    log.info(f"hub upload: done: https://huggingface.co/{calls.hf_repo}")
    return True
