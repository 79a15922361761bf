"""The job's configuration: every environment variable the image reads, parsed once, typed.

`load_config()` is the only place the environment is read. It returns a `JobConfig` or raises
`ConfigError` listing every problem at once (a pod restarted per fix costs a GPU start each time),
each naming the variable, the key and what is accepted — before any model or dataset is loaded.
TRAINING_CONFIG is this image's flat shape or the platform's nested job configuration
(trainer/config/platform.py maps it); user keys override only the defaults they name. Secrets live in `Secrets` (pydantic SecretStr): they are never in reprs, argv,
TrainingArguments or logs; children of `accelerate launch` read them from the environment again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from trainer.config.calls import platform_calls
from trainer.config.checks import (
    check_path,
    check_predictions,
    check_training,
    check_uuid,
    refuse_sharded,
    storage_mode,
)
from trainer.config.environment import IMAGE_HF_HOME, IMAGE_OUTPUT_DIR, VARIABLES, Environment, Secrets, image_default
from trainer.config.errors import ConfigError, Problems
from trainer.config.job import JobConfig
from trainer.config.platform import PlatformJob, is_platform_shape, map_platform
from trainer.config.schema import PredictionsConfig, TrainingConfig
from trainer.demo import DEMO_MODEL, DEMO_PREDICTIONS, DEMO_TRAINING, EVAL_FILE, TRAIN_FILE


def _quoted_hint(raw: str) -> str:
    s = raw.strip()
    if len(s) > 1 and s[0] == s[-1] and s[0] in "'\"":
        return ("; the value is wrapped in quotes, which an env file (docker --env-file) passes on literally: "
                "remove the outer quotes")
    return ""


def _parse_json(variable: str, raw: str | None, problems: Problems) -> dict | None:
    """The JSON object in `raw` (None when unset or unusable; the problem is recorded)."""
    if raw is None or not raw.strip():
        return None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        problems.add(variable, f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}{_quoted_hint(raw)}")
        return None
    if not isinstance(data, dict):
        problems.add(variable, f"must be a JSON object, got {type(data).__name__}{_quoted_hint(raw)}")
        return None
    return data


def _pydantic_problems(variable: str, model: type[BaseModel], e: ValidationError, problems: Problems,
                       rename: Callable[[tuple], str] | None = None) -> None:
    """Every error of `e`, phrased as `VARIABLE.key: what is wrong (got …); accepted: …`."""
    for err in e.errors():
        loc = tuple(str(p) for p in err["loc"])
        key = (rename(loc) if rename else ".".join(loc)) or None
        if err["type"] == "extra_forbidden":
            owner = model
            for part in loc[:-1]:  # the nested model the unknown key sits in
                owner = _submodel(owner, part)
            accepted = ", ".join(owner.model_fields) if owner else "see the README"
            problems.add(variable, f"unknown key; accepted: {accepted}", key)
            continue
        msg = err["msg"]
        if "input" in err and not isinstance(err["input"], dict):
            msg += f" (got {err['input']!r})"
        accepted = _accepted(model, loc, err["type"])
        problems.add(variable, f"{msg}; accepted: {accepted}" if accepted else msg, key)


#: What a pydantic type error accepts, by its error type (literal errors list their values already).
_KINDS = {"float": "a number (e.g. 0.0002 or 2e-4)", "int": "a whole number (e.g. 8)", "bool": "true or false",
          "string": "text (a JSON string)", "list": "a JSON list", "dict": "a JSON object"}
_BOUNDS = (("gt", "greater than"), ("ge", "at least"), ("lt", "less than"), ("le", "at most"))


def _accepted(model, loc: tuple, kind: str) -> str | None:
    """What the field at `loc` accepts, for an error of `kind` whose message does not say it (a
    wrong type: "learning_rate: … (got 'fast')" becomes "…; accepted: a number greater than 0")."""
    if kind.startswith(("literal", "enum", "greater", "less")):
        return None  # the message lists the values or states the bound already
    owner = model
    for part in loc[:-1]:
        owner = _submodel(owner, part)
    field = owner.model_fields.get(loc[-1]) if owner is not None and loc else None
    what = next((text for prefix, text in _KINDS.items() if kind.startswith(prefix)), None)
    if field is None or what is None:
        return what
    bounds = [f"{word} {getattr(m, attr)}" for m in field.metadata for attr, word in _BOUNDS
              if getattr(m, attr, None) is not None]
    if bounds:
        what += ", " + " and ".join(bounds)
    return what + (f" — {field.description}" if field.description else "")


def _partial(model: type[BaseModel], merged: dict, e: ValidationError) -> tuple[BaseModel | None, set[str]]:
    """`merged` validated without the keys that failed (their defaults instead), so that the checks
    across keys still run on the rest and every problem is reported at once; and the failed keys."""
    failed = {str(err["loc"][0]) for err in e.errors() if err["loc"]}
    try:
        return model.model_validate({k: v for k, v in merged.items() if k not in failed}), failed
    except ValidationError:
        return None, failed


def _submodel(model, name: str):
    """The pydantic model of field `name` of `model` (through Optional), or None."""
    if model is None or name not in model.model_fields:
        return None
    annotation = model.model_fields[name].annotation
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _merge(*layers: tuple[dict, str]) -> tuple[dict, dict[str, str]]:
    """Layers of keys, later ones overriding only the keys they name (one level into sub-blocks
    such as lora); and where each key's value came from."""
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for values, source in layers:
        for k, v in values.items():
            if isinstance(v, dict) and isinstance(merged.get(k), dict):
                merged[k] = {**merged[k], **v}
            else:
                merged[k] = v
            sources[k] = source if not callable(source) else source(k)
    return merged, sources


def _platform_model_name(raw: str | None) -> str | None:
    """model.name of a platform-shaped TRAINING_CONFIG, read ahead: it decides whether the demo's
    defaults apply (a malformed value is reported by _training_config)."""
    try:
        data = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return None
    if isinstance(data, dict) and is_platform_shape(data) and isinstance(data.get("model"), dict):
        name = data["model"].get("name")
        return name if isinstance(name, str) and name else None
    return None


def _training_config(env: Environment, demo: bool, problems: Problems):
    """TRAINING_CONFIG (flat or the platform's nested shape) merged over the defaults."""
    data = _parse_json("TRAINING_CONFIG", env.TRAINING_CONFIG, problems)
    shape, user, origin, mapped = "none", {}, {}, None
    if data is not None and is_platform_shape(data):
        shape = "platform"
        try:
            mapped = map_platform(PlatformJob.model_validate(data))
        except ValidationError as e:
            _pydantic_problems("TRAINING_CONFIG", PlatformJob, e, problems)
            return None, shape, {}, None, set()
        for key, why in mapped.refusals:
            problems.add("TRAINING_CONFIG", why, key)
        user, origin = mapped.training, mapped.origin
    elif data is not None:
        shape, user = "flat", data
    layers = [(DEMO_TRAINING, "demo")] if demo else []
    label = (lambda k: f"platform config ({origin.get(k, k)})") if shape == "platform" else "TRAINING_CONFIG"
    merged, sources = _merge(*layers, (user, label))
    if "save_steps" in user and "save_strategy" not in user and merged.get("save_strategy") == "no":
        merged["save_strategy"] = "steps"  # save_steps alone means saving (the demo's default is "no")
        sources["save_strategy"] = sources["save_steps"]
    try:
        training = TrainingConfig.model_validate(merged)
    except ValidationError as e:
        def rename(loc: tuple) -> str:  # the platform's key, where the value came from one
            return ".".join((origin.get(loc[0], loc[0]), *loc[1:])) if loc else ""
        _pydantic_problems("TRAINING_CONFIG", TrainingConfig, e, problems, rename if shape == "platform" else None)
        partial, failed = _partial(TrainingConfig, merged, e)
        return partial, shape, sources, mapped, failed | {origin.get(k, k) for k in failed}
    return training, shape, sources, mapped, set()


#: A model of the user's, nothing said about predictions (no PREDICTIONS_CONFIG, no platform
#: configuration): predictions are the image's point, so a small fixed sample at each epoch end.
#: PREDICTIONS_CONFIG replaces it ({"enabled": false} turns them off); a platform configuration
#: says what it says.
MODEL_PREDICTIONS = {"enabled": True, "sample_count": 8, "sample_frequency": "epoch"}


def _predictions_config(env: Environment, demo: bool, platform_block: dict | None, problems: Problems,
                        platform_shape: bool = False):
    """PREDICTIONS_CONFIG, or the platform configuration's predictions block, over the defaults."""
    own = _parse_json("PREDICTIONS_CONFIG", env.PREDICTIONS_CONFIG, problems)
    user, source = own, "PREDICTIONS_CONFIG"
    if own is not None and platform_block is not None and own != platform_block:
        problems.add("PREDICTIONS_CONFIG", "differs from TRAINING_CONFIG.predictions: set one of them "
                     "(PREDICTIONS_CONFIG, or the platform configuration's predictions block), or make them equal")
    elif own is None and platform_block is not None:
        user, source = platform_block, "TRAINING_CONFIG.predictions"
    if user is None:
        source = "demo" if demo else "default"
    defaults = DEMO_PREDICTIONS if demo else MODEL_PREDICTIONS if user is None and not platform_shape else {}
    merged, _ = _merge((defaults, source), (user or {}, source))
    variable = "PREDICTIONS_CONFIG" if source != "TRAINING_CONFIG.predictions" else "TRAINING_CONFIG"
    try:
        return PredictionsConfig.model_validate(merged), source, variable, set()
    except ValidationError as e:
        prefix = ("predictions",) if variable == "TRAINING_CONFIG" else ()
        _pydantic_problems(variable, PredictionsConfig, e, problems, lambda loc: ".".join((*prefix, *loc)))
        partial, failed = _partial(PredictionsConfig, merged, e)
        return partial, source, variable, failed


def check_model_name(model_name: str, problems: Problems) -> None:
    """A local MODEL_NAME must hold a model; a Hub id is checked when the training process fetches it."""
    if not model_name:
        problems.add("MODEL_NAME", 'empty: a Hugging Face id ("org/name"), a local model folder, or unset for the demo')
        return
    path = Path(model_name).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        problems.add("MODEL_NAME", f"{model_name} is a folder without a model (no config.json): a local model is a "
                     "folder written by save_pretrained (config.json, weights, tokenizer), or give a Hugging Face id")
    elif model_name.startswith(("/", "./", "../", "~")) and not path.exists():
        problems.add("MODEL_NAME", f"{model_name}: no such folder (a local model folder, or a Hugging Face id \"org/name\")")


def load_config() -> JobConfig:
    """Read and validate the whole environment. Raises ConfigError listing every problem found;
    loads nothing heavy. The one write: HF_HOME gets the image's default when it is empty."""
    problems = Problems()
    try:
        env = Environment()
    except ValidationError as e:
        failed = {}
        for err in e.errors():
            name = str(err["loc"][0])
            secret = VARIABLES.get(name, ("", "", False))[2]  # a secret's value is never shown
            accepted = _accepted(Environment, tuple(map(str, err["loc"])), err["type"])
            problems.add(name, (err["msg"] if secret else f"{err['msg']} (got {err.get('input')!r})")
                         + (f"; accepted: {accepted}" if accepted else ""))
            failed[str(err["loc"][0])] = None
        env = Environment(**failed)  # the rest is still checked: every problem in one message

    # The model: MODEL_NAME, or the platform configuration's model.name (the demo's defaults
    # apply under the user's keys only when the model is the demo)
    model_name, platform_model = env.MODEL_NAME, _platform_model_name(env.TRAINING_CONFIG)
    if platform_model:
        if "MODEL_NAME" not in env.model_fields_set:
            model_name = platform_model
        elif platform_model != env.MODEL_NAME:
            problems.add("MODEL_NAME", f"{env.MODEL_NAME!r} differs from TRAINING_CONFIG.model.name "
                         f"{platform_model!r}: set one of them, or make them equal")
    demo = model_name == DEMO_MODEL
    check_model_name(model_name, problems)
    # A block with a bad key is still checked across keys (the bad key at its default, and no
    # problem reported about it twice): every problem at once, not one per fix.
    training, shape, sources, mapped, failed = _training_config(env, demo, problems)
    predictions, predictions_source, pred_variable, failed_predictions = _predictions_config(
        env, demo, mapped.predictions if mapped else None, problems, shape == "platform")
    failed |= {f"predictions.{k}" for k in failed_predictions} | failed_predictions
    checked, problems = problems, Problems()

    # The data: DATASET_PATH, or DATASET_URL as the platform sends it
    dataset, eval_dataset = env.DATASET_PATH, env.EVAL_DATASET_PATH
    if env.DATASET_PATH and env.DATASET_URL and env.DATASET_PATH != env.DATASET_URL:
        problems.add("DATASET_URL", "differs from DATASET_PATH: they name the same thing (DATASET_URL is the "
                     "platform's name); set one of them")
    dataset = dataset or env.DATASET_URL
    if dataset is None:
        if not demo:
            problems.add("DATASET_PATH", "not set (nor DATASET_URL); a JSON / JSONL file or https URL of training rows")
        else:
            dataset, eval_dataset = str(TRAIN_FILE), eval_dataset or str(EVAL_FILE)
    if dataset:
        check_path("DATASET_PATH" if env.DATASET_PATH else "DATASET_URL", dataset, problems)
    if eval_dataset:
        check_path("EVAL_DATASET_PATH", eval_dataset, problems)

    has_eval = eval_dataset is not None or (training is not None and training.eval_split > 0)
    if training is not None:
        origin = mapped.origin if mapped else {}
        key = (lambda k: origin.get(k, k)) if shape == "platform" else (lambda k: k)
        training = check_training(training, has_eval, problems, key)
    if predictions is not None:
        check_predictions(predictions, training, has_eval, pred_variable, problems)
        try:
            refuse_sharded(predictions)
        except ConfigError as e:  # reported with the others
            problems.extend(e.problems)
    if failed:  # checked on a partial block: nothing more about a key already reported
        failed |= {p.key for p in checked if p.key}
    problems = Problems([*checked, *(p for p in problems if p.key not in failed)])

    platform = None
    try:
        platform = platform_calls(env)
    except ConfigError as e:  # reported with the others
        problems.extend(e.problems)
    storage, reason = storage_mode(env, problems)
    job_id, user_id = env.JOB_ID or "local", env.USER_ID
    if env.JOB_ID is not None and not env.JOB_ID.strip():
        problems.add("JOB_ID", "is blank; any non-empty text (the platform's job id)")
    if storage != "local":
        need = "database mode writes every prediction row with the job and its owner"
        if not env.JOB_ID:
            problems.add("JOB_ID", f"not set; {need}")
        user_id = check_uuid("USER_ID", env.USER_ID, need, problems)

    output_dir, output_source = image_default("OUTPUT_DIR", IMAGE_OUTPUT_DIR, "outputs")
    hf_home, _ = image_default("HF_HOME", IMAGE_HF_HOME, None)
    if problems:
        raise ConfigError(problems)
    if hf_home and not os.environ.get("HF_HOME", "").strip():
        os.environ["HF_HOME"] = hf_home  # read by huggingface_hub in every training process

    return JobConfig(
        job_id=job_id,
        user_id=user_id,
        model_name=model_name,
        dataset_path=dataset,
        eval_dataset_path=eval_dataset,
        output_dir=Path(output_dir),
        training=training,
        predictions=predictions,
        storage=storage,
        storage_reason=reason,
        supabase_url=env.SUPABASE_URL,
        secrets=Secrets(env.SUPABASE_SERVICE_KEY, env.SUPABASE_ANON_KEY, env.SUPABASE_DB_URL,
                        env.JOB_TOKEN, env.INTERNAL_API_KEY, env.HF_TOKEN),
        num_processes=env.NUM_PROCESSES,
        env=env,
        config_shape=shape,
        training_sources=sources,
        predictions_source=predictions_source,
        notes=tuple(mapped.notes) if mapped else (),
        output_dir_source=output_source,
        platform=platform,
    )
