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
failed; 74 OUTPUT_DIR's disk is full; 75 another entrypoint runs on OUTPUT_DIR; 69 the model could
not be fetched (Hub or network away); 130 / 143 stopped (Ctrl-C / SIGTERM: a restart resumes); 137 a
training process was killed; otherwise the training processes' own code. `report`: 66 no predictions for the job, 69
the database could not be read; `diagnose`: 1 when a check did not pass. Everything here runs
once, in the parent, before any model is loaded. A job that OUTPUT_DIR/job_state.json says ended
is not trained again: it exits 0 when it completed, with its code when it failed (FRESH_RUN=1 or
`run --fresh` starts over; trainer/pod/job.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from trainer.config.errors import ConfigError
from trainer.config.exits import EXIT_BUSY, EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_MIGRATION, EXIT_OK, EXIT_PREFLIGHT
from trainer.config.job import JobConfig
from trainer.config.load import load_config
from trainer.logs import setup as setup_logging
from trainer.pod.job import config_failed, finish, mark_running, previous_outcome

log = logging.getLogger("entrypoint")


def prepare(cfg: JobConfig, *, replay_previous: bool) -> tuple[int, str] | None:
    """Migrations, preflight and the previous attempt's spool; (exit code, why) when it must stop."""
    from predictions.store.delivery import DatabaseRefused, MigrationFailed, prepare_database

    try:
        prepare_database(cfg, replay_previous=replay_previous)
    except MigrationFailed as e:
        log.info(f"migrations: FAILED: {e}")
        return EXIT_MIGRATION, f"migrations: {e}"
    except DatabaseRefused as e:
        log.info(f"preflight: FAILED: {e}")
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
    setup_logging()

    # Each command imports what it uses, when it runs: `diagnose`, `migrate` and `report` start
    # without torch; the training path loads it (trainer/pod/launch.py, trainer/model.py) after the
    # configuration is known to be good.
    if opts.command == "diagnose":  # before load_config: a configuration that fails is its first finding
        from predictions.report.diagnose import diagnose_command

        return diagnose_command(job_id=opts.job)
    if opts.command == "migrate":  # needs the database URL only, not a job's configuration
        from predictions.store.delivery import migrate_command

        return migrate_command(os.environ.get("SUPABASE_DB_URL", "").strip() or None)

    try:
        cfg = load_config()
    except ConfigError as e:
        log.info(f"configuration error: {e}")
        log.info("the pod stops before loading anything; fix what is listed above and start it again")
        if opts.command == "run":
            config_failed(str(e))
        return EXIT_CONFIG

    if opts.command == "report":
        from predictions.report.summary import report_command

        return report_command(cfg, job_id=opts.job, html=opts.html, source=opts.source, threshold=opts.threshold)

    from trainer.datacheck import recorded_failure
    from trainer.model import resolve_precision
    from trainer.pod.launch import device_kind, launch_command, process_count, run_children, strategy_refusal
    from trainer.pod.platform import describe as describe_calls
    from trainer.pod.report import print_report
    from trainer.pod.volume import end_torn_lines

    if opts.command == "replay":
        from predictions.store.delivery import replay_command

        return replay_command(cfg, opts.spool or cfg.predictions_path)

    processes, device = process_count(cfg), device_kind()
    refusal = strategy_refusal(device)
    if refusal:
        log.info(f"configuration error: {refusal}")
        if opts.command == "run":  # like any configuration error: job_failed, nothing written
            config_failed(refusal)
        return EXIT_CONFIG
    precision = resolve_precision(cfg.training)
    print_report(cfg, processes, device, precision)
    for line in describe_calls(cfg.platform):
        log.info(line)
    if opts.command == "run":
        from trainer.pod.supervise import OutputDirBusy, hold_output_dir

        try:
            hold_output_dir(cfg.output_dir)  # held until this process ends, however it ends
        except OutputDirBusy as e:
            log.info(f"refused: {e}")
            return EXIT_BUSY
        ended = previous_outcome(cfg, fresh=opts.fresh)
        if ended is not None:
            if ended == EXIT_OK and prepare(cfg, replay_previous=True):  # rows a completed run could not deliver
                log.info(f"the rows not yet in the database stay in {cfg.predictions_path}: "
                         "`python entrypoint.py replay` once it is reachable")
            return ended
    stop = check_data_and_machine(cfg, processes, device)
    if stop is not None and opts.command == "run":
        return finish(cfg, stop[0], error=stop[1])
    stop = prepare(cfg, replay_previous=opts.command == "run") or stop  # `check` reports both
    if stop is not None:
        return finish(cfg, stop[0], error=stop[1]) if opts.command == "run" else stop[0]
    if opts.command == "check":
        log.info("check: configuration, data and database are ready; nothing was trained")
        return EXIT_OK

    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    end_torn_lines(cfg.output_dir)
    mark_running(cfg)
    cmd, extra_env = launch_command(processes, precision, device)
    log.info(f"launch: {' '.join(cmd[1:])}")
    code = run_children(cmd, extra_env)
    failure = recorded_failure(cfg.output_dir, clear=True)
    if code != 0 and failure:  # a training process refused the data: the same message and code as the parent's
        log.info(f"data error: {failure}")
        return finish(cfg, EXIT_CONFIG, error=f"data error: {failure}")
    log.info(f"entrypoint: training processes exited with code {code}")
    return finish(cfg, code)


def check_data_and_machine(cfg: JobConfig, processes: int, device: str) -> tuple[int, str] | None:
    """The data, OUTPUT_DIR and the process count, before anything expensive; (78, why) when one
    is unusable."""
    from trainer.data import DataError
    from trainer.datacheck import RunRefused, check_data, check_machine

    try:
        check_machine(cfg, processes, device)
        check_data(cfg)
    except RunRefused as e:
        log.info(f"configuration error: {e}")
        return EXIT_CONFIG, f"configuration error: {e}"
    except DataError as e:
        log.info(f"data error: {e}")
        log.info("the pod stops before loading the model; fix the data and start it again")
        return EXIT_CONFIG, f"data error: {e}"
    return None


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C before the launch (during training the handler forwards it)
        log.info("stopped (SIGINT); nothing is left running")
        sys.exit(EXIT_INTERRUPTED)
