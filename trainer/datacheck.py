"""Data checked before training, in the parent: the same reader the training processes use.

`check_data` downloads each URL once onto the volume (trainer/fetch.py), reads every file the job
names — DATASET_PATH / DATASET_URL, EVAL_DATASET_PATH, PREDICTIONS_CONFIG.samples_path — and
validates it row by row (trainer/data.py). It prints usable rows per format and skipped rows by
reason with their lines, and raises `DataError` naming the variable, the file and the reason when a
file cannot be used at all. The entrypoint runs it before `accelerate launch` and in `check`, so a
bad file stops the pod in seconds with exit 78 instead of crashing a training process after the
model has loaded.

The context-length and unknown-token checks need the model's tokenizer: the demo's is trained
here in-process (cheap); a hub model's is used only if it is already on this machine (no download
in the parent) — otherwise the training process makes those checks with the same code.

Also here, the other things a run needs from the machine before it starts: a writable OUTPUT_DIR
and a process count the machine can run.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from trainer.config.job import JobConfig
from trainer.data import FORMATS_HELP, DataError, FileRows, read_rows, row_format, row_texts, usable_examples
from trainer.demo import DEMO_CONTEXT, DEMO_MAX_ROWS, DEMO_MAX_WORDS, TRAIN_FILE, demo_tokenizer
from trainer.fetch import DiskFull, DownloadError, local_path
from trainer.pairs import rated_problem
from trainer.pod.state import read_state, write_state
from trainer.redact import redact_url

log = logging.getLogger(__name__)

UNKNOWN_CONTEXT = 1_000_000  # transformers' stand-in for "no limit" is 1e30: treat as unknown
DEMO_ON_YOUR_DATA = ("demo model: a small model trained from scratch on your data, for trying the image on a CPU; "
                     "set MODEL_NAME for real fine-tuning")


@dataclass(frozen=True)
class Source:
    """One file the job reads: the variable that names it and the path or URL as given."""

    variable: str
    location: str

    @property
    def label(self) -> str:
        """How messages name it: the variable and the file, a URL without its query."""
        return f"{self.variable} {redact_url(self.location)}"  # a local path comes back as it is


def sources(cfg: JobConfig) -> list[Source]:
    """Every data file of the job, training data first."""
    # DATASET_URL is the platform's name for DATASET_PATH (helper B1's config): name what the user set.
    named = "DATASET_URL" if getattr(cfg.env, "DATASET_URL", None) and not cfg.env.DATASET_PATH else "DATASET_PATH"
    found = [Source(named, cfg.dataset_path)]
    if cfg.eval_dataset_path:
        found.append(Source("EVAL_DATASET_PATH", cfg.eval_dataset_path))
    if cfg.predictions.enabled and cfg.predictions.samples_path:
        found.append(Source("PREDICTIONS_CONFIG.samples_path", cfg.predictions.samples_path))
    return found


def fetch(source: Source, output_dir: Path, job_id: str) -> Path:
    """The local file of `source` (downloaded once onto the volume, for this job); DataError naming it if not."""
    try:
        return local_path(source.location, output_dir, job_id)
    except DiskFull:  # not the data's: the caller stops with 74 (a restart tries again)
        raise
    except DownloadError as e:
        raise DataError(f"{source.variable}: {e}") from None


def local_files(cfg: JobConfig) -> list[Path]:
    """The local files of every source (what the demo's tokenizer is trained on)."""
    return [fetch(s, cfg.output_dir, cfg.job_id) for s in sources(cfg)]


def user_data(cfg: JobConfig) -> bool:
    """True when the demo model trains on a user's data rather than the bundled data."""
    return cfg.is_demo and Path(cfg.dataset_path) != TRAIN_FILE


def model_context(cfg: JobConfig, tokenizer) -> int | None:
    """The model's context in tokens, when known."""
    if cfg.is_demo:
        return DEMO_CONTEXT
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and limit < UNKNOWN_CONTEXT else None


def _local_tokenizer(model_name: str):
    """The hub model's tokenizer if it is on this machine already (a path, or the HF cache); else None."""
    # Here, not at the top: the parent loads transformers only for a hub model's data check.
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # a miss is expected here, not news
    try:
        return AutoTokenizer.from_pretrained(model_name, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:  # not cached, or not a tokenizer transformers can load offline
        return e


def check_data(cfg: JobConfig) -> None:
    """Read and validate every data file of the job; raise DataError when one cannot be used."""
    files: list[tuple[Source, FileRows]] = []
    paths = []
    for source in sources(cfg):
        path = fetch(source, cfg.output_dir, cfg.job_id)
        paths.append(path)
        try:
            files.append((source, read_rows(path, name=source.label)))
        except DataError as e:
            raise DataError(f"{source.variable}: {e}") from None

    if cfg.is_demo:
        tokenizer = demo_tokenizer(paths if user_data(cfg) else None)
    else:
        tokenizer = _local_tokenizer(cfg.model_name)
        if isinstance(tokenizer, Exception):
            log.info(f"data: the tokenizer of {cfg.model_name} is not on this machine yet: prompt lengths and unknown "
                "tokens are checked by the training process once it has downloaded it")
            tokenizer = None
    context = model_context(cfg, tokenizer) if tokenizer is not None else None

    t = cfg.training
    trained: set[int] | None = None  # the tokens of the training answers: what the model learns to write
    for source, file in files:
        checked = usable_examples(file, tokenizer, context=context, max_length=t.max_seq_length, method=t.method)
        for line in checked.describe(source.label):
            log.info(line)
        if not checked.examples:
            raise DataError(f"{source.label}: no usable row for TRAINING_CONFIG.method {t.method!r} (the reasons are "
                            f"above); {FORMATS_HELP}")
        if (source is files[0][0] and not cfg.eval_dataset_path and cfg.training.eval_split > 0
                and cfg.training.eval_strategy != "no" and len(checked.examples) < 2):  # one row stays to train on
            raise DataError(f"TRAINING_CONFIG.eval_split: {cfg.training.eval_split:g} of {source.label}'s "
                            f"{len(checked.examples)} usable row leaves no row to evaluate on; add rows, set "
                            "EVAL_DATASET_PATH, or set eval_split to 0")
        check_method_rows(t, source.label, checked.examples, training=source is files[0][0])
        if tokenizer is not None:
            answers = [x.completion for x in checked.examples]
            if trained is None:  # the training file comes first
                # A model trained from scratch writes only what it was taught; a pretrained one
                # already writes its whole vocabulary: for it only <unk> matters.
                trained = {i for ids in _answer_ids(tokenizer, answers) for i in ids} if cfg.is_demo else set()
                for line in unwritable_answers(tokenizer, answers, None, source.label):
                    log.info(line)
            else:
                for line in unwritable_answers(tokenizer, answers, trained, source.label):
                    log.info(line)

    if user_data(cfg):
        rows = sum(len(f.rows) for _s, f in files)
        words = sum(len(text.split()) for _s, f in files for _l, _p, row in f.rows if row_format(row)[0]
                    for text in row_texts(row))
        log.info(DEMO_ON_YOUR_DATA)
        if rows > DEMO_MAX_ROWS or words > DEMO_MAX_WORDS:
            raise DataError(
                f"MODEL_NAME: the demo model trains from scratch on a CPU and takes at most {DEMO_MAX_ROWS:,} rows "
                f"and {DEMO_MAX_WORDS:,} words; your data has {rows:,} rows and {words:,} words. Set MODEL_NAME to a "
                "real model for fine-tuning (on a GPU), or try the demo on a smaller file")


def check_method_rows(t, label: str, examples, *, training: bool) -> None:
    """What a method needs of its rows as a whole (kto: rewarded rows of both kinds); DataError if not."""
    if t.method != "kto" or not training:
        return
    unrated = sum(e.trl.get("reward") is None for e in examples)
    if unrated:
        log.info(f"data: {label}: {unrated} rows have no reward: kto cannot tell whether they are good; left out")
    problem = rated_problem(examples, t.reward_threshold)
    if problem:
        raise DataError(f"{label}: {problem}")


def _answer_ids(tokenizer, answers: list[str]) -> list[list[int]]:
    return tokenizer(answers, add_special_tokens=False).input_ids if answers else []


def unwritable_answers(tokenizer, answers: list[str], trained: set[int] | None, label: str) -> list[str]:
    """Warnings for answers the model cannot write: tokens <unk> (the tokenizer cannot spell them),
    or, with `trained` (the training answers' tokens, for a model trained from scratch), tokens no
    training answer has (the model never learned to write them — the mark of a tokenizer that makes
    each whole answer one token)."""
    unk = tokenizer.unk_token_id
    unknown, unseen = [], []
    for answer, ids in zip(answers, _answer_ids(tokenizer, answers), strict=True):
        if unk is not None and unk in ids:
            unknown.append(answer)
        elif trained and not trained.issuperset(ids):
            unseen.append(answer)
    lines = []
    n = len(answers)
    if unknown:
        lines.append(f"data: {label}: WARNING {len(unknown)} of {n} answers hold tokens unknown to the tokenizer "
                     f"(<unk>; e.g. {unknown[0][:40]!r}): the model cannot write them, so they can never be right")
    if unseen:
        lines.append(f"data: {label}: WARNING {len(unseen)} of {n} answers hold tokens no training answer has "
                     f"(e.g. {unseen[0][:40]!r}): the model never learned to write them, so they are unlikely "
                     "to be right; answers made of pieces the training answers share can be learned")
    return lines


def record_failure(output_dir: Path, message: str) -> None:
    """A training process's data error, left for the parent (which reports it with exit 78) in the
    job's state on the volume (trainer/pod/state.py), beside any other error of the attempt."""
    write_state(output_dir, data_error=message)


def recorded_failure(output_dir: Path, *, clear: bool = False) -> str | None:
    """The data error a training process left, if any (and forget it when `clear`)."""
    message = (read_state(output_dir) or {}).get("data_error")
    if message and clear:
        write_state(output_dir, data_error=None)
    return message


class RunRefused(Exception):
    """The machine cannot run the job as configured; the message names the variable."""


def check_machine(cfg: JobConfig, processes: int, device: str) -> None:
    """OUTPUT_DIR writable, and a process count this machine can run; RunRefused if not."""
    out = cfg.output_dir
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise RunRefused(f"OUTPUT_DIR: {out} is not writable ({e.strerror}); checkpoints, the final model and the "
                         "predictions spool go there: mount a writable volume or choose another path") from None
    if device == "cuda":
        import torch  # here, not at the top: the parent loads torch only to count the GPUs

        limit, what = torch.cuda.device_count(), "GPUs"
    else:
        limit, what = os.cpu_count() or 1, "CPU cores (and no GPU)"
    if processes > limit:
        raise RunRefused(f"NUM_PROCESSES: {processes} training processes, but this machine has {limit} {what}; "
                         f"at most {limit} (one per GPU; on a CPU, one per core)")
