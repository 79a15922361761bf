"""The platform's launch, read instead of run: its bootstrap arguments and the job's configuration
inside TRAINING_SCRIPT_B64.

The platform's deploy route (lib/training/runpod-service.ts `createPod`) starts every pod with
`dockerArgs: bash -c 'echo "$TRAINING_SCRIPT_B64" | base64 -d > /workspace/run_training.sh &&
chmod +x /workspace/run_training.sh && /workspace/run_training.sh'` and the script in the variable
(lib/training/script-builder.ts `generateRunPodScript`) pip-installs its dependencies, downloads
DATASET_URL, writes the job's configuration with `echo "<base64>" | base64 -d >
/workspace/config.json`, writes its own trainer (standalone_trainer.py) and runs it. There is no
TRAINING_CONFIG: the configuration travels only inside the script.

As deployed, though, the builder's template escapes that interpolation (`\\${configBase64}`): the
script decodes a shell variable nothing sets, and the platform's own pod writes an empty
config.json (and an empty trainer). The configuration is then where the deploy route stored it
with the job: `local_training_jobs.config`, readable with the service key the pod is given.

This image runs none of it. `platform_command(argv)` recognises the bootstrap arguments (however
RunPod splits them) as the `run` command; `read_script()` decodes the script and takes out what
is the job's: config.json (used exactly as TRAINING_CONFIG; else the job's row), and the
`export HF_TOKEN=` / `export JOB_ID=` lines where the environment lacks them; `apply()` puts
those into the environment the training processes inherit (an explicit TRAINING_CONFIG wins).
What the script would have done besides is listed, as ignored, in the startup report. The script
is never written to disk nor printed: it holds the HF token.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import shlex
from collections.abc import MutableMapping
from dataclasses import dataclass, field

import httpx

from trainer.config.errors import ConfigError
from trainer.redact import redact_url

VARIABLE = "TRAINING_SCRIPT_B64"
#: The deploy route's dockerArgs, as its source writes them.
PLATFORM_BOOTSTRAP = ("bash -c 'echo \"$TRAINING_SCRIPT_B64\" | base64 -d > /workspace/run_training.sh && "
                      "chmod +x /workspace/run_training.sh && /workspace/run_training.sh'")
#: Where the platform's trainer leaves the model (script-builder.ts generateTrainingConfig output_dir).
PLATFORM_MODEL_DIR = "/workspace/fine_tuned_model"
SHELLS = ("bash", "/bin/bash", "/usr/bin/bash", "sh", "/bin/sh")

# script-builder.ts: echo "<base64>" | base64 -d > /workspace/config.json
_CONFIG_B64 = re.compile(r'echo\s+"([A-Za-z0-9+/=\s]*)"\s*\|\s*base64\s+(?:-d|--decode)\s*>\s*(\S*config\.json)')
# runpod-service.ts generateTrainingScript: cat > /workspace/config.json << 'CONFIGEOF' … CONFIGEOF
_CONFIG_HEREDOC = re.compile(r"cat\s*>\s*(\S*config\.json)\s*<<\s*'?(\w+)'?[ \t]*\n(.*?)\n\2[ \t]*$", re.S | re.M)
# script-builder.ts as deployed: its template escapes the interpolation (`echo "\${configBase64}"`), so the
# script decodes a shell variable nothing sets (and, under its `set -u`, stops there)
_CONFIG_SHELL_VAR = re.compile(r'echo\s+"\$\{?(\w+)\}?"\s*\|\s*base64\s+(?:-d|--decode)\s*>\s*(\S*config\.json)')
_TRAINER_B64 = re.compile(r'echo\s+"([A-Za-z0-9+/=\s]*)"\s*\|\s*base64\s+(?:-d|--decode)\s*>\s*\S*standalone_trainer\.py')
_PINNED = re.compile(r'"([A-Za-z][A-Za-z0-9_.\-]*(?:==|>=|<=|~=)[0-9][^"\s]*)"')


class UsageError(Exception):
    """Arguments the entrypoint does not accept; the message names what it does accept."""


def platform_command(argv: list[str]) -> str | None:
    """The shell command of the platform's bootstrap when `argv` is one (RunPod may pass it as
    ['bash', '-c', CMD], as one string, or split on blanks), else None when `argv` is no shell
    invocation at all. A shell invocation that is not the bootstrap is a UsageError: this image
    runs its own training, never a command it is handed."""
    if not any(a.strip() for a in argv):  # none, or an empty start command
        return None
    if len(argv) == 1 and argv[0].split(None, 1)[0] in SHELLS:
        try:
            argv = shlex.split(argv[0])
        except ValueError:
            raise UsageError(_refused(argv[0])) from None
    if argv[0] not in SHELLS:
        return None
    if len(argv) < 3 or argv[1] != "-c":
        raise UsageError(_refused(" ".join(argv)))
    command = argv[2] if len(argv) == 3 else " ".join(argv[2:])
    if len(command) > 1 and command[0] == command[-1] and command[0] in "'\"":
        command = command[1:-1]  # split on blanks: the quotes stayed on the first and last piece
    normal = " ".join(command.split())
    if "$TRAINING_SCRIPT_B64" not in normal or not re.search(r"base64 (-d|--decode)", normal):
        raise UsageError(_refused(" ".join(argv)))
    return normal


def accepted() -> str:
    """The entrypoint's accepted arguments, in one sentence."""
    return ("Accepted: run [--fresh], check, replay [--spool PATH], migrate, report [--job ID] [--html FILE] "
            "[--from auto|spool|database] [--threshold X], diagnose [--job ID]; or the platform's bootstrap, "
            f"which this image reads instead of running: {PLATFORM_BOOTSTRAP}")


def _refused(given: str) -> str:
    shown = given if len(given) <= 200 else given[:200] + "…"
    return f"arguments not understood: {shown!r}. " + accepted()


@dataclass
class Script:
    """What TRAINING_SCRIPT_B64 holds, as this image uses it."""

    chars: int  # the variable's length
    config_text: str | None  # config.json, as the script writes it; None: the script holds none
    config_path: str  # where the script writes it (/workspace/config.json)
    model_dir: str | None  # config.json's output_dir: where the platform's pod leaves the model
    no_config: str | None = None  # why the script holds no configuration
    hf_token: str | None = field(default=None, repr=False)  # secret
    job_id: str | None = None
    ignored: tuple[str, ...] = ()
    taken: list[str] = field(default_factory=list)  # filled by apply()
    config_used: bool = True  # False when TRAINING_CONFIG is set (it wins)


def read_script(environ: MutableMapping[str, str]) -> Script | None:
    """TRAINING_SCRIPT_B64 decoded and read (None when unset or empty). Raises ConfigError naming
    the variable when it is no base64 text or embeds no config.json."""
    raw = environ.get(VARIABLE, "")
    if not raw.strip():
        return None
    try:
        text = base64.b64decode("".join(raw.split()), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise ConfigError(VARIABLE, f"not base64-encoded UTF-8 text ({len(raw)} chars); the platform's deploy route "
                          "sets it to the base64 of the script its script builder writes") from None
    config, path = _config_json(text)
    unset = _CONFIG_SHELL_VAR.search(text) if config is None else None
    if unset:
        return Script(chars=len(raw), config_text=None, config_path=unset.group(2), model_dir=PLATFORM_MODEL_DIR,
                      no_config=f"its config.json line decodes the shell variable ${{{unset.group(1)}}}, which nothing "
                      "sets (the platform's script builder escapes that interpolation; its own pod writes an empty "
                      "config.json there)",
                      hf_token=_export(text, "HF_TOKEN"), job_id=_export(text, "JOB_ID"), ignored=tuple(_ignored(text)))
    if config is None:
        raise ConfigError(VARIABLE, "the script embeds no config.json (`echo \"<base64>\" | base64 -d > "
                          "/workspace/config.json`, as the platform's script builder writes it, or a `cat > "
                          "…config.json << 'EOF'` block); set TRAINING_CONFIG to the job's configuration instead")
    try:
        parsed = json.loads(config)
    except json.JSONDecodeError:
        parsed = None  # reported by load_config as TRAINING_CONFIG's malformed JSON, with its position
    model_dir = parsed.get("output_dir") if isinstance(parsed, dict) else None
    return Script(chars=len(raw), config_text=config, config_path=path,
                  model_dir=model_dir if isinstance(model_dir, str) and model_dir else None,
                  hf_token=_export(text, "HF_TOKEN"), job_id=_export(text, "JOB_ID"), ignored=tuple(_ignored(text)))


def _config_json(text: str) -> tuple[str | None, str]:
    m = _CONFIG_B64.search(text)
    if m:
        try:
            return base64.b64decode("".join(m.group(1).split()), validate=True).decode("utf-8"), m.group(2)
        except (binascii.Error, ValueError):
            raise ConfigError(VARIABLE, f"the script's config.json ({m.group(2)}) is not valid base64 UTF-8 text") from None
    m = _CONFIG_HEREDOC.search(text)
    if m:
        return m.group(3), m.group(1)
    return None, ""


def _export(text: str, name: str) -> str | None:
    """The value of `export NAME="value"` in the script; None when absent, empty or a shell
    expansion (the runpod-service form exports "${JOB_ID}" from the environment itself)."""
    m = re.search(rf'^\s*export {name}="([^"$`\\]*)"\s*$', text, re.M)
    return m.group(1) if m and m.group(1) else None


def _ignored(text: str) -> list[str]:
    """What the script would do that this image does not, each with what happens instead."""
    out = []
    if re.search(r"pip (install|uninstall)", text):
        pins = sorted(set(_PINNED.findall(text)))
        out.append(f"its pip installs ({', '.join(pins) or 'packages'}): this image's dependencies are installed "
                   "and pinned already (no minutes of installing on every start)")
    trainer = _TRAINER_B64.search(text)
    if trainer or "standalone_trainer.py" in text:
        size = f" ({len(base64.b64decode(''.join(trainer.group(1).split())))} bytes)" if trainer else ""
        out.append(f"the platform's trainer standalone_trainer.py{size}: not written, not run; this image trains "
                   "with its own (accelerate launch → trainer/train.py)")
    if "$DATASET_URL" in text or "${DATASET_URL}" in text:
        out.append("its download of DATASET_URL to /workspace/dataset.jsonl: this image downloads DATASET_URL itself "
                   "(gzip recognised by its magic bytes)")
    if ".training_started" in text:
        out.append("its restart lock (/workspace/.training_started): OUTPUT_DIR/job_state.json decides instead "
                   "(an ended job is not trained again; an interrupted one resumes)")
    if re.search(r"sleep (3600|120)", text):
        out.append("its sleeps after training (an hour after success, 2 minutes after a failure): the pod ends "
                   "with job_completed / job_failed, which is what makes the platform stop it")
    if "WANDB_API_KEY" in text:
        out.append("WANDB_API_KEY: no Weights & Biases here")
    return out


def apply(script: Script, environ: MutableMapping[str, str]) -> None:
    """The script's configuration into `environ` as TRAINING_CONFIG (unless TRAINING_CONFIG is
    set: an explicit variable wins), HF_TOKEN and JOB_ID where unset; TRAINING_SCRIPT_B64 itself
    removed, so that the training processes neither inherit its size nor the token in it. The
    script's JOB_ID and the environment's must be the same job (ConfigError otherwise)."""
    env_job = environ.get("JOB_ID", "").strip()
    if script.job_id and env_job and env_job != script.job_id:
        raise ConfigError("JOB_ID", f"{env_job!r} differs from the job the platform's script exports "
                          f"({script.job_id!r}); both come from the same deploy request: set one of them")
    if environ.get("TRAINING_CONFIG", "").strip():
        script.config_used = False
    elif script.config_text is not None:
        environ["TRAINING_CONFIG"] = script.config_text
        script.taken.append(f"config.json ({script.config_path}) → TRAINING_CONFIG")
    else:  # the job's row holds the configuration the deploy route stored with it
        environ["TRAINING_CONFIG"] = job_config_from_database(environ, script.no_config or "")
        script.taken.append(f"no configuration: {script.no_config}; TRAINING_CONFIG is the job's own, read from "
                            "the platform's database (local_training_jobs.config, with the service key)")
    if script.hf_token and not environ.get("HF_TOKEN", "").strip():
        environ["HF_TOKEN"] = script.hf_token
        script.taken.append("HF_TOKEN (its export line; the deploy route sets the variable only with HF_REPO_NAME)")
    if script.job_id and not environ.get("JOB_ID", "").strip():
        environ["JOB_ID"] = script.job_id
        script.taken.append("JOB_ID (its export line)")
    environ.pop(VARIABLE, None)


JOBS_TABLE = "local_training_jobs"
FETCH_TIMEOUT_S = 30.0


def job_config_from_database(environ: MutableMapping[str, str], why: str) -> str:
    """The job's configuration as the platform's deploy route stored it (`local_training_jobs.config`,
    its training_configs.config_json, the predictions block included), read through the Supabase
    API with the service key the pod is given. ConfigError naming what is missing or refused."""
    url, key = environ.get("SUPABASE_URL", "").strip(), environ.get("SUPABASE_SERVICE_KEY", "").strip()
    job = environ.get("JOB_ID", "").strip()
    missing = [n for n, v in (("SUPABASE_URL", url), ("SUPABASE_SERVICE_KEY", key), ("JOB_ID", job)) if not v]
    if missing:
        raise ConfigError(VARIABLE, f"the script holds no job configuration ({why}), and it cannot be read from "
                          f"the platform's database without {', '.join(missing)}; set TRAINING_CONFIG to it")
    where = f"{JOBS_TABLE}.config of job {job!r}"
    try:
        r = httpx.get(f"{url.rstrip('/')}/rest/v1/{JOBS_TABLE}", params={"select": "config", "id": f"eq.{job}"},
                      headers={"apikey": key, "Authorization": f"Bearer {key}"}, timeout=FETCH_TIMEOUT_S)
    except httpx.HTTPError as e:
        raise ConfigError(VARIABLE, f"the script holds no job configuration ({why}); reading {where} from "
                          f"{redact_url(url)} failed: {type(e).__name__}; set TRAINING_CONFIG to it") from None
    try:
        rows = r.json() if r.status_code == 200 else None
    except ValueError:  # not JSON: a proxy's page, say
        rows = None
    config = rows[0].get("config") if isinstance(rows, list) and rows and isinstance(rows[0], dict) else None
    if not isinstance(config, dict):
        got = f"HTTP {r.status_code}" if rows is None else ("no such job" if not rows else "no configuration in it")
        raise ConfigError(VARIABLE, f"the script holds no job configuration ({why}); reading {where} from "
                          f"{redact_url(url)}: {got}; set TRAINING_CONFIG to the job's configuration")
    return json.dumps(config)


def describe(script: Script, command: str | None) -> list[str]:
    """The startup report's lines for a platform launch: what was taken, what was ignored."""
    how = "started with the platform's bootstrap arguments" if command else "TRAINING_SCRIPT_B64 is set"
    lines = [f"platform launch: {how}; its script ({VARIABLE}, {script.chars:,} chars) is read, not run"]
    if script.taken:
        lines.append(f"platform launch: taken from the script: {'; '.join(script.taken)}")
    if not script.config_used:
        lines.append(f"platform launch: the script's config.json ({script.config_path}) is NOT used: TRAINING_CONFIG "
                     "is set, and an explicit variable wins")
    for item in script.ignored:
        lines.append(f"platform launch: ignored: {item}")
    return lines
