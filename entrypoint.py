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

    python entrypoint.py bash -c 'echo "$TRAINING_SCRIPT_B64" | base64 -d > …'
                                    the platform's bootstrap arguments (its deploy route's
                                    dockerArgs): the same as `run`, with the job's configuration
                                    read out of the script (trainer/config/bootstrap.py); the
                                    script itself is not run

Exit codes: 0 done; 64 arguments not understood; 78 bad configuration or data; 77 the database refused (preflight); 76 a migration
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

from trainer.config import bootstrap
from trainer.config.errors import ConfigError
from trainer.config.exits import (
    EXIT_BUSY,
    EXIT_CONFIG,
    EXIT_DISK_FULL,
    EXIT_INTERRUPTED,
    EXIT_MIGRATION,
    EXIT_OK,
    EXIT_PREFLIGHT,
    EXIT_USAGE,
)
from trainer.config.job import JobConfig
from trainer.config.load import load_config
from trainer.logs import setup as setup_logging
from trainer.pod.cluster import check_processes, claims_primary, detect_cluster, joined, launch_failure
from trainer.pod.job import config_failed, finish, mark_running, place_for_platform, previous_outcome
from trainer.pod.state import read_state

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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line naming what is accepted, not a usage dump
        raise bootstrap.UsageError(f"{message}. " + bootstrap.accepted())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    setup_logging()
    try:
        command = bootstrap.platform_command(argv)  # RunPod's dockerArgs: read the script, never run it
        argv = ["run"] if command else [a for a in argv if a.strip()]  # an empty start command: run
        opts = _parser().parse_args(argv)
    except bootstrap.UsageError as e:
        log.info(f"usage error: {e}")
        if claims_primary():  # on a pod (a cluster's node 0): job_failed, or a restart loops on the same arguments
            config_failed(str(e))
        return EXIT_USAGE

    # Each command imports what it uses, when it runs: `diagnose`, `migrate` and `report` start
    # without torch; the training path loads it (trainer/pod/launch.py, trainer/model.py) after the
    # configuration is known to be good.
    if opts.command == "migrate":  # needs the database URL only, not a job's configuration
        from predictions.store.delivery import migrate_command

        return migrate_command(os.environ.get("SUPABASE_DB_URL", "").strip() or None)
    script, script_error = None, None
    try:
        script = bootstrap.read_script(os.environ)
        if script is None and command:
            raise ConfigError(bootstrap.VARIABLE, "not set, but the pod was started with the platform's bootstrap "
                              "arguments, which decode it; the deploy route sets it to the job's script")
        if script is not None:
            bootstrap.apply(script, os.environ)  # the training processes inherit what it sets
    except ConfigError as e:
        script_error = e
    if opts.command == "diagnose":  # before load_config: a configuration that fails is its first finding
        from predictions.report.diagnose import diagnose_command

        return diagnose_command(job_id=opts.job)

    try:
        if script_error is not None:  # the rest is still checked: every problem in one message
            try:
                load_config()
            except ConfigError as e:
                raise ConfigError(script_error.problems + e.problems) from None
            raise script_error
        cfg = load_config()
    except ConfigError as e:
        log.info(f"configuration error: {e}")
        if script is not None and script.config_used:
            log.info(f"(TRAINING_CONFIG here is the platform launch's: {script.taken[0]})")
        log.info("the pod stops before loading anything; fix what is listed above and start it again")
        if opts.command == "run":
            if claims_primary():  # a cluster's node 0 alone tells the platform
                config_failed(str(e))
        return EXIT_CONFIG
    return _after_config(cfg, opts, script, command)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="entrypoint.py", description=__doc__.split("\n\n")[0])
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
    return parser


def _after_config(cfg: JobConfig, opts, script: bootstrap.Script | None, command: str | None) -> int:
    """The command, once the configuration is good."""
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

    device = device_kind()
    try:  # RunPod's or Kubeflow's variables: this node's role (one node when none is set)
        cluster = detect_cluster()
        processes = process_count(cfg, cluster)
        check_processes(cluster, processes, num_processes_set=cfg.num_processes is not None)
        refusal = strategy_refusal(device)
    except ConfigError as e:
        refusal = str(e)
    if refusal:
        log.info(f"configuration error: {refusal}")
        if opts.command == "run" and claims_primary():  # like any configuration error: job_failed, nothing written
            config_failed(refusal)
        return EXIT_CONFIG
    primary = cluster.is_primary  # a cluster's other nodes: no job routes, no migrations, no rows
    precision = resolve_precision(cfg.training)
    print_report(cfg, processes, device, precision, cluster=cluster,
                 launch=bootstrap.describe(script, command) if script is not None else ())
    for line in describe_calls(cfg.platform):
        log.info(line)
    if opts.command == "run":
        from trainer.pod.supervise import OutputDirBusy, hold_output_dir

        try:
            hold_output_dir(cfg.output_dir)  # held until this process ends, however it ends
        except OutputDirBusy as e:
            log.info(f"refused: {e}")
            return EXIT_BUSY
        ended = previous_outcome(cfg, fresh=opts.fresh, primary=primary)
        if ended is not None:
            if ended == EXIT_OK and prepare(cfg, replay_previous=True):  # rows a completed run could not deliver
                log.info(f"the rows not yet in the database stay in {cfg.predictions_path}: "
                         "`python entrypoint.py replay` once it is reachable")
            return ended
    stop = check_data_and_machine(cfg, processes, device)
    if stop is not None and opts.command == "run":
        return finish(cfg, stop[0], error=stop[1], primary=primary)
    if primary:
        stop = prepare(cfg, replay_previous=opts.command == "run") or stop  # `check` reports both
    else:
        log.info(f"database: migrations, preflight and replay are node 0's; this is node {cluster.node_rank}")
    if stop is not None:
        return finish(cfg, stop[0], error=stop[1], primary=primary) if opts.command == "run" else stop[0]
    if opts.command == "check":
        log.info("check: configuration, data and database are ready; nothing was trained")
        return EXIT_OK

    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    end_torn_lines(cfg.output_dir)
    mark_running(cfg)
    joined(cfg.output_dir, clear=True)  # a previous launch's start is not this one's
    cmd, extra_env = launch_command(processes, precision, device, cluster)
    log.info(f"launch: {' '.join(cmd[1:])}")
    code = run_children(cmd, extra_env)
    failure = recorded_failure(cfg.output_dir, clear=True)
    if code != 0 and failure:  # a training process refused the data: the same message and code as the parent's
        log.info(f"data error: {failure}")
        return finish(cfg, EXIT_CONFIG, error=f"data error: {failure}", primary=primary)
    log.info(f"entrypoint: training processes exited with code {code}")
    why = launch_failure(cluster, cfg.output_dir, code, recorded=(read_state(cfg.output_dir) or {}).get("error"))
    if why:  # the nodes never met, or one went away: said in the cluster's terms
        log.info(why)
    if code == 0 and primary and script is not None and script.model_dir:  # before job_completed: the pod stops
        volume = Path(script.model_dir).parent
        if volume not in cfg.output_dir.resolve().parents:  # OUTPUT_DIR moved off the platform's volume
            log.info(f"platform model folder: {script.model_dir} not written: OUTPUT_DIR is not on {volume}, "
                     f"the model is in {cfg.output_dir / 'final'}")
        else:
            place_for_platform(cfg.output_dir, Path(script.model_dir))
    return finish(cfg, code, error=why, primary=primary)


def check_data_and_machine(cfg: JobConfig, processes: int, device: str) -> tuple[int, str] | None:
    """The data, OUTPUT_DIR and the process count, before anything expensive; (78, why) when one
    is unusable."""
    from trainer.child import disk_full_message
    from trainer.data import DataError
    from trainer.datacheck import RunRefused, check_data, check_machine
    from trainer.fetch import DiskFull

    try:
        check_machine(cfg, processes, device)
        check_data(cfg)
    except DiskFull as e:  # a download filled OUTPUT_DIR's disk: not the data's fault, a restart tries again
        message = disk_full_message(cfg.output_dir)
        log.info(f"{message} ({e})")
        return EXIT_DISK_FULL, message
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
