"""The pod's main: configuration → startup report → preflight / migrations → accelerate launch.

    python entrypoint.py            run the job (with nothing set: the bundled demo)
    python entrypoint.py check      configuration, report and database preflight; no training
    python entrypoint.py replay     put a spool's rows (OUTPUT_DIR/predictions.jsonl) into the
                                    database, without duplicates [--spool PATH]

Exit codes: 0 done; 78 bad configuration; 77 the database refused (preflight); 76 a migration
failed; otherwise the training processes' own code. A job that OUTPUT_DIR/job_state.json says
ended is not trained again: it exits 0 when it completed, with its code when it failed
(FRESH_RUN=1 or `run --fresh` starts over; trainer/lifecycle.py). Everything here runs once, in
the parent, before any model or dataset is loaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainer.config import EXIT_CONFIG, EXIT_MIGRATION, EXIT_PREFLIGHT, ConfigError, JobConfig, load_config


def log(msg: str) -> None:
    print(msg, flush=True)


def prepare(cfg: JobConfig, *, replay_previous: bool) -> tuple[int, str] | None:
    """Migrations, preflight and the previous attempt's spool; (exit code, why) when it must stop."""
    from predictions.storage import DatabaseRefused, MigrationFailed, prepare_database

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
    parser.add_argument("command", nargs="?", default="run", choices=["run", "check", "replay"])
    parser.add_argument("--spool", type=Path, help="replay: the spool file (default OUTPUT_DIR/predictions.jsonl)")
    parser.add_argument("--fresh", action="store_true", help="run: start over although the job ended (FRESH_RUN=1)")
    opts = parser.parse_args(argv)
    from trainer import lifecycle

    try:
        cfg = load_config()
    except ConfigError as e:
        log(f"configuration error: {e}")
        log("the pod stops before loading anything; fix the variable above and start it again")
        if opts.command == "run":
            lifecycle.config_failed(str(e), log=log)
        return EXIT_CONFIG

    from trainer.launch import device_kind, launch_command, process_count, run_children
    from trainer.model import resolve_precision
    from trainer.report import print_report

    if opts.command == "replay":
        from predictions.storage import replay_command

        return replay_command(cfg, opts.spool or cfg.predictions_path, log=log)

    processes, device = process_count(cfg), device_kind()
    precision = resolve_precision(cfg.training)
    print_report(cfg, processes, device, precision)
    for line in lifecycle.describe(cfg.platform):
        log(line)
    if opts.command == "run":
        ended = lifecycle.previous_outcome(cfg, fresh=opts.fresh or cfg.env.FRESH_RUN, log=log)
        if ended is not None:
            return ended
    stop = prepare(cfg, replay_previous=opts.command == "run")
    if stop is not None:
        return lifecycle.finish(cfg, stop[0], error=stop[1], log=log) if opts.command == "run" else stop[0]
    if opts.command == "check":
        log("check: configuration and database are ready; nothing was trained")
        return 0

    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    lifecycle.mark_running(cfg)
    cmd, extra_env = launch_command(processes, precision, device)
    log(f"launch: {' '.join(cmd[1:])}")
    code = run_children(cmd, extra_env, log=log)
    log(f"entrypoint: training processes exited with code {code}")
    return lifecycle.finish(cfg, code, log=log)


if __name__ == "__main__":
    sys.exit(main())
