"""The per-rank training script, started by `accelerate launch` (see trainer/pod/launch.py).

Every rank reads the same configuration from the environment (secrets included: never argv),
loads the data and the model, and trains with the HF Trainer. Every rank generates its share of
each prediction round; the main process alone writes them (predictions/rounds.py).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from transformers import TrainingArguments
from transformers.utils import logging as hf_logging

from predictions.callback import PredictionsCallback
from predictions.preference import Pair, PreferenceScorer
from predictions.report.summary import print_summary, write_run_report
from predictions.rounds import ROUNDS_LOG_NAME, PredictionRounds, RankGroup, fault_hook_from_env, with_prompts
from predictions.sampler import draw_samples
from predictions.store.delivery import finish_delivery, open_remote_writer, previously_written_steps
from predictions.store.writers.local import LocalJsonlWriter
from trainer import checkpoints, progress
from trainer.child import child_main
from trainer.config.errors import ConfigError
from trainer.config.exits import EXIT_CONFIG
from trainer.config.job import JobConfig, best_model, expected_rounds
from trainer.config.load import load_config
from trainer.data import Checked, DataError, Example, FileRows, check_file, read_rows, split_holdout
from trainer.datacheck import check_method_rows, fetch, model_context, record_failure, sources
from trainer.logs import setup as setup_logging
from trainer.methods import build_trainer
from trainer.methods.common import TrainerInputs
from trainer.model import load_model, load_tokenizer, resolve_optim, resolve_precision, save_final
from trainer.pod.cluster import collective_timeout_s, nodes_in_run
from trainer.pod.launch import fsdp_enabled

# By name: run as a script (accelerate launch, python -m trainer.train), __name__ is "__main__".
log = logging.getLogger("trainer.train")

#: The modules whose lines the main process alone prints when several processes train.
MAIN_PROCESS_LOGGERS = ("trainer.data", "trainer.model", "trainer.checkpoints")


def training_arguments(cfg: JobConfig) -> TrainingArguments:
    """TrainingArguments from the validated config. No secret goes in here: it is saved with
    every checkpoint (training_args.bin)."""
    t = cfg.training
    precision = resolve_precision(t)
    optim, _why = resolve_optim(t)  # the startup report printed the fallback, if any
    return TrainingArguments(
        output_dir=str(cfg.output_dir),
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        eval_strategy=t.eval_strategy,
        eval_steps=t.eval_steps,
        save_total_limit=t.save_total_limit,
        logging_steps=t.logging_steps,
        seed=t.seed,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        lr_scheduler_type=t.lr_scheduler_type,
        lr_scheduler_kwargs=t.lr_scheduler_kwargs or None,
        optim=optim,
        adam_beta1=t.adam_beta1,
        adam_beta2=t.adam_beta2,
        adam_epsilon=t.adam_epsilon,
        max_grad_norm=t.max_grad_norm,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        dataloader_num_workers=t.dataloader_num_workers,
        dataloader_prefetch_factor=t.dataloader_prefetch_factor,
        dataloader_pin_memory=t.dataloader_pin_memory and torch.cuda.is_available(),  # pinning needs a GPU
        **best_model(cfg),  # save_strategy, save_steps, load_best_model_at_end, metric_for_best_model
        activation_checkpointing=t.gradient_checkpointing,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        ddp_timeout=collective_timeout_s(nodes_in_run() > 1),
        # A cluster's pods do not share a volume: each node keeps the checkpoints its restart needs.
        save_on_each_node=nodes_in_run() > 1,
        ddp_find_unused_parameters=False,
        remove_unused_columns=False,  # each method's TRL trainer keeps the columns its collator reads
        report_to="none",
        disable_tqdm=True,  # pod logs are line-oriented: the Trainer prints its log dicts instead
        save_only_model=False,
    )


def load_data(cfg: JobConfig, tokenizer, *, is_main: bool = True):
    """Training and evaluation examples (None where there is none), and every file as read and
    checked (by variable), once each, as the parent's data check reads them. The main process
    alone says what it held out."""
    context, files = model_context(cfg, tokenizer), sources(cfg)
    read = {s.variable: check_file(read_rows(fetch(s, cfg.output_dir, cfg.job_id)), tokenizer, label=s.label,
                                   context=context, method=cfg.training.method) for s in files}
    train = read[files[0].variable].examples
    check_method_rows(cfg.training, files[0].label, train, training=True)
    evaluation = read["EVAL_DATASET_PATH"].examples if "EVAL_DATASET_PATH" in read else None
    if evaluation is None and cfg.training.eval_split > 0:
        train, evaluation = split_holdout(train, cfg.training.eval_split, cfg.training.seed)
        if is_main:
            log.info(f"data: held out {len(evaluation)} of {len(train) + len(evaluation)} rows for evaluation")
    return train, evaluation, read


def pick_samples(cfg: JobConfig, tokenizer, train: list[Example], evaluation: list[Example] | None,
                 read: dict[str, Checked], quiet: bool = False):
    """The fixed sample: from samples_path, else the evaluation data, else the training data; the
    rows as load_data read them. `quiet` (on every rank but the main one): no line about dropped rows."""
    p = cfg.predictions
    source, file, examples = _sample_source(cfg, train, evaluation, read)
    triples = with_prompts([(e.source_index, e.prompt, e.completion) for e in examples], tokenizer,
                           what=f"{source} rows", quiet=quiet)
    # The file's name only: a signed URL's query string is a credential.
    name = Path(file.location.split("?", 1)[0]).name
    # The rows as read give the platform's prompt ids (a hash of the source messages).
    return draw_samples(triples, p.sample_count, seed=p.seed, source=source, source_id=name,
                        source_rows=_rows_by_position(read[file.variable].file))


def _sample_source(cfg: JobConfig, train: list[Example], evaluation: list[Example] | None, read: dict[str, Checked]):
    """(source name, file, examples) the fixed sample is drawn from."""
    train_source, *others = sources(cfg)
    by_variable = {s.variable: s for s in others}
    if cfg.predictions.samples_path:
        file = by_variable["PREDICTIONS_CONFIG.samples_path"]
        return "samples", file, read[file.variable].examples
    if evaluation:  # a held-out split's rows come from (and are indexed in) the training file
        return "eval", by_variable.get("EVAL_DATASET_PATH", train_source), evaluation
    return "train", train_source, train


def preference_scorer(cfg: JobConfig, tokenizer, samples, examples: list[Example]) -> PreferenceScorer | None:
    """dpo / orpo: the fixed sample's pairs (chosen vs rejected) for the rounds' preference scores."""
    if cfg.training.method not in ("dpo", "orpo"):
        return None
    by_index = {e.source_index: e for e in examples if e.rejected is not None}
    pairs = {s.sample_index: Pair(s.prompt, by_index[s.source_index].completion, by_index[s.source_index].rejected)
             for s in samples if s.source_index in by_index}
    return PreferenceScorer(pairs, tokenizer, cfg.training.method, cfg.training.beta) if pairs else None


def _rows_by_position(file: FileRows) -> list:
    """The file's rows indexed by source_index (None where a line could not be parsed)."""
    rows: list = [None] * (max((position for _, position, _ in file.rows), default=-1) + 1)
    for _line, position, row in file.rows:
        rows[position] = row
    return rows


def _from_main(value):
    """The main process's `value`, on every rank (as it is with one process)."""
    return broadcast_object_list([value], from_process=0)[0]


def main() -> int:
    setup_logging()
    hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()  # pod logs are line-oriented
    try:
        cfg = load_config()
    except ConfigError as e:  # the parent validated already; this guards a direct invocation
        log.info(f"configuration error: {e}")
        return EXIT_CONFIG

    args = training_arguments(cfg)  # initialises the distributed state under accelerate launch
    is_main = args.process_index == 0
    tokenizer = load_tokenizer(cfg)
    # One copy of each line, not one per rank: the other ranks read the same data and build the same model.
    if not is_main:
        for name in MAIN_PROCESS_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with args.main_process_first(local=True, desc="data"):  # one rank downloads, the others reuse
            train, evaluation, read = load_data(cfg, tokenizer, is_main=is_main)
    except DataError as e:  # the parent checked already; a hub tokenizer can still find prompts too long
        log.info(f"data error: {e}")
        if is_main:
            record_failure(cfg.output_dir, str(e))
        return EXIT_CONFIG
    evaluated = evaluation if cfg.training.eval_strategy != "no" else None  # samples may still come from it

    model = load_model(cfg, tokenizer)
    resume = checkpoints.newest_common(cfg.output_dir, cfg.job_id)  # every node from the same step of this job

    callbacks, rounds, remote = [checkpoints.MarkComplete(cfg.job_id), *progress.callbacks(cfg)], None, None
    samples = pick_samples(cfg, tokenizer, train, evaluation, read, quiet=not is_main) if cfg.predictions.enabled else []
    preference = None
    if samples and is_main:  # the main process scores preference (predictions/preference.py)
        preference = preference_scorer(cfg, tokenizer, samples, _sample_source(cfg, train, evaluation, read)[2])
        if preference is not None:
            preference.set_reference(model)  # DPO's reference: the starting model, before any step
    del read  # the files' rows as read: not kept through training
    if is_main and cfg.predictions.enabled and not samples:
        log.info("predictions: no usable sample (every prompt is empty); no rounds")
    if samples:
        done_steps: set[int] = set()
        local = None
        if is_main:
            remote = open_remote_writer(cfg)
            done_steps = previously_written_steps(cfg, len(samples))
            local = LocalJsonlWriter(cfg.predictions_path)
        # Every rank generates its share of a round (with FSDP in lockstep); the main process writes.
        rounds = PredictionRounds(
            samples, tokenizer, cfg.predictions, job_id=cfg.job_id, user_id=cfg.user_id,
            local=local, remote=remote, json_schema=cfg.json_schema,
            expected_rounds=expected_rounds(cfg, len(train), args.world_size),
            group=RankGroup(args.process_index, args.world_size, synced=fsdp_enabled(),
                            local_world_size=args.world_size // nodes_in_run()),
            rounds_log=cfg.output_dir / ROUNDS_LOG_NAME if is_main else None,
            test_fault=fault_hook_from_env(),
            preference=preference,
        )
        # Only the main process reads the spool, but every rank skips the same rounds (and their
        # collectives): a rank that waits in a gather the main process skips hangs the job.
        done_steps = _from_main(done_steps)
        callbacks.append(PredictionsCallback(
            rounds.run,
            frequency=cfg.predictions.sample_frequency,
            step_interval=cfg.predictions.step_interval,
            baseline=cfg.predictions.baseline,
            done_steps=done_steps,
        ))
        if is_main:
            when = {"eval": "after each evaluation", "epoch": "at each epoch end",
                    "steps": f"every {cfg.predictions.step_interval} steps"}[cfg.predictions.sample_frequency]
            log.info(f"predictions: {len(samples)} samples from {samples[0].sample_source}, {when}")
    elif is_main and not cfg.predictions.enabled:
        log.info("predictions: disabled (PREDICTIONS_CONFIG.enabled is false); no callback registered")

    # The method's TRL trainer (trainer/methods/); every method gets the same callbacks.
    trainer = build_trainer(TrainerInputs(cfg, args, model, tokenizer, train, evaluated, callbacks))
    if resume:
        log.info(f"resume: from {resume.name}")
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)

    if fsdp_enabled():
        # Sharded parameters: the full state dict is gathered by every rank together (a
        # collective), so the Trainer saves; the main process alone would wait for the others.
        trainer.save_model(str(cfg.output_dir / "final"))
        if is_main:
            tokenizer.save_pretrained(cfg.output_dir / "final")
            log.info(f"saved: model (gathered from the FSDP shards) and tokenizer in {cfg.output_dir / 'final'}")
    if is_main:
        if not fsdp_enabled():
            save_final(trainer.model, tokenizer, cfg.output_dir, cfg.training)
        if rounds is not None:
            stats, caught_up = None, None
            if remote is not None:
                stats, caught_up = finish_delivery(cfg, remote)
            print_summary(rounds.results, stats, spool=cfg.predictions_path, caught_up=caught_up,
                          html=write_run_report(cfg), job_id=cfg.job_id)
    PartialState().wait_for_everyone()
    return 0


if __name__ == "__main__":
    sys.exit(child_main(main))
