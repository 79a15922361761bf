"""The pod's main: configuration → startup report → preflight / migrations → accelerate launch.

    python entrypoint.py            run the job (with nothing set: the bundled demo)
    python entrypoint.py check      configuration, report, data (every file read and checked, row by
                                    row) and database preflight; no training
    python entrypoint.py replay     put a spool's rows (OUTPUT_DIR/predictions.jsonl) into the
                                    database, without duplicates [--spool PATH]
    python entrypoint.py migrate    apply sql/ to SUPABASE_DB_URL's database, nothing else
    python entrypoint.py report     the predictions across rounds: per round figures, per sample
                                    history and regressions [--job ID] [--html FILE] [--from ...]
    python entrypoint.py diagnose   why predictions do (not) arrive: each check with its fix
                                    [--job ID]; exit 0 only when every check passes

Exit codes: 0 done; 78 bad configuration or data; 77 the database refused (preflight); 76 a migration
failed; 74 OUTPUT_DIR's disk is full; otherwise the training processes' own code. `report`: 66 no predictions for the job, 69
the database could not be read; `diagnose`: 1 when a check did not pass. Everything here runs
once, in the parent, before any model is loaded. A job that OUTPUT_DIR/job_state.json says ended
is not trained again: it exits 0 when it completed, with its code when it failed (FRESH_RUN=1 or
`run --fresh` starts over; trainer/pod/platform.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainer.config.load import EXIT_CONFIG, EXIT_MIGRATION, EXIT_PREFLIGHT, ConfigError, JobConfig, load_config


def log(msg: str) -> None:
    print(msg, flush=True)


def prepare(cfg: JobConfig, *, replay_previous: bool) -> tuple[int, str] | None:
    """Migrations, preflight and the previous attempt's spool; (exit code, why) when it must stop."""
    from predictions.store.delivery import DatabaseRefused, MigrationFailed, prepare_database

    try:
        prepare_database(cfg, replay_previous=replay_previous, log=log)
    except MigrationFailed as e:
        log(f"migrations: FAILED: {e}")
        return EXIT_MIGRATION, f"migrations: {e}"
    except DatabaseRefused as e:
        log(f"preflight: FAILED: {e}")
        return EXIT_PREFLIGHT, f"preflight: {e}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="entrypoint.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="run",
                        choices=["run", "check", "replay", "migrate", "report", "diagnose"])
    parser.add_argument("--spool", type=Path, help="replay: the spool file (default OUTPUT_DIR/predictions.jsonl)")
    parser.add_argument("--job", help="report, diagnose: the job (default JOB_ID)")
    parser.add_argument("--html", type=Path, help="report: also write the HTML report to this file")
    parser.add_argument("--from", dest="source", default="auto", choices=["auto", "spool", "database"],
                        help="report: rows from the spool or the database (auto: the database in database mode)")
    parser.add_argument("--threshold", type=float, default=0.2,
                        help="report: a char error rate worse than the sample's best by more than this is a regression")
    parser.add_argument("--fresh", action="store_true", help="run: start over although the job ended (FRESH_RUN=1)")
    opts = parser.parse_args(argv)
    from trainer.pod import platform as lifecycle

    if opts.command == "diagnose":  # before load_config: a configuration that fails is its first finding
        from predictions.report.diagnose import diagnose_command

        return diagnose_command(job_id=opts.job, log=log)
    if opts.command == "migrate":  # needs the database URL only, not a job's configuration
        import os

        from predictions.store.delivery import migrate_command

        return migrate_command(os.environ.get("SUPABASE_DB_URL", "").strip() or None, log=log)

    try:
        cfg = load_config()
    except ConfigError as e:
        log(f"configuration error: {e}")
        log("the pod stops before loading anything; fix what is listed above and start it again")
        if opts.command == "run":
            lifecycle.config_failed(str(e), log=log)
        return EXIT_CONFIG

    if opts.command == "report":
        from predictions.report.summary import report_command

        return report_command(cfg, job_id=opts.job, html=opts.html, source=opts.source, threshold=opts.threshold, log=log)

    from trainer.datacheck import recorded_failure
    from trainer.pod.launch import device_kind, launch_command, process_count, run_children, strategy_refusal
    from trainer.model import resolve_precision
    from trainer.pod.report import print_report

    if opts.command == "replay":
        from predictions.store.delivery import replay_command

        return replay_command(cfg, opts.spool or cfg.predictions_path, log=log)

    processes, device = process_count(cfg), device_kind()
    refusal = strategy_refusal(device)
    if refusal:
        log(f"configuration error: {refusal}")
        if opts.command == "run":  # like any configuration error: job_failed, nothing written
            lifecycle.config_failed(refusal, log=log)
        return EXIT_CONFIG
    precision = resolve_precision(cfg.training)
    print_report(cfg, processes, device, precision)
    for line in lifecycle.describe(cfg.platform):
        log(line)
    if opts.command == "run":
        ended = lifecycle.previous_outcome(cfg, fresh=opts.fresh or cfg.env.FRESH_RUN, log=log)
        if ended is not None:
            return ended
    stop = check_data_and_machine(cfg, processes, device)
    if stop is not None and opts.command == "run":
        return lifecycle.finish(cfg, stop[0], error=stop[1], log=log)
    stop = prepare(cfg, replay_previous=opts.command == "run") or stop  # `check` reports both
    if stop is not None:
        return lifecycle.finish(cfg, stop[0], error=stop[1], log=log) if opts.command == "run" else stop[0]
    if opts.command == "check":
        log("check: configuration, data and database are ready; nothing was trained")
        return 0

    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    lifecycle.mark_running(cfg)
    cmd, extra_env = launch_command(processes, precision, device)
    log(f"launch: {' '.join(cmd[1:])}")
    code = run_children(cmd, extra_env, log=log)
    failure = recorded_failure(cfg.output_dir, clear=True)
    if code != 0 and failure:  # a training process refused the data: the same message and code as the parent's
        log(f"data error: {failure}")
        return lifecycle.finish(cfg, EXIT_CONFIG, error=f"data error: {failure}", log=log)
    log(f"entrypoint: training processes exited with code {code}")
    return lifecycle.finish(cfg, code, log=log)


def check_data_and_machine(cfg: JobConfig, processes: int, device: str) -> tuple[int, str] | None:
    """The data, OUTPUT_DIR and the process count, before anything expensive; (78, why) when one
    is unusable."""
    from trainer.data import DataError
    from trainer.datacheck import RunRefused, check_data, check_machine

    try:
        check_machine(cfg, processes, device)
        check_data(cfg, log=log)
    except RunRefused as e:
        log(f"configuration error: {e}")
        return EXIT_CONFIG, f"configuration error: {e}"
    except DataError as e:
        log(f"data error: {e}")
        log("the pod stops before loading the model; fix the data and start it again")
        return EXIT_CONFIG, f"data error: {e}"
    return None


if __name__ == "__main__":
    sys.exit(main())
