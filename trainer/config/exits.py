"""Every exit code the image stops with, in one place. Distinct codes (sysexits.h where one fits)
so that the platform and a person can tell why a pod stopped without reading its log."""

EXIT_OK = 0
EXIT_CHECK_FAILED = 1  # `diagnose`: a check did not pass
EXIT_USAGE = 64  # EX_USAGE: arguments the entrypoint does not accept (the message names those it does)
EXIT_NO_INPUT = 66  # EX_NOINPUT: `report` / `replay` found no predictions for the job
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: `report` could not read the database
EXIT_BUSY = 75  # EX_TEMPFAIL: another entrypoint runs on this OUTPUT_DIR; nothing was changed
EXIT_DISK_FULL = 74  # EX_IOERR: OUTPUT_DIR's device is full (a training process says so, without a traceback)
EXIT_MIGRATION = 76  # EX_PROTOCOL: a migration failed to apply
EXIT_PREFLIGHT = 77  # EX_NOPERM: the database refused (wrong key, table missing, no write)
EXIT_CONFIG = 78  # EX_CONFIG: bad or incomplete configuration or unusable data; the message names the fix
EXIT_INTERRUPTED = 130  # SIGINT: 128 + 2
EXIT_KILLED = 137  # SIGKILL: 128 + 9 (on a pod, usually the out-of-memory killer)
EXIT_STOPPED = 143  # SIGTERM: 128 + 15, the pod being stopped; a restart resumes

#: Failures found before training starts, checked again on every start in seconds: a rerun after
#: the fix just runs; unfixed, it fails again (and says so to the platform) without training.
RECHECKED_ON_START = (EXIT_CONFIG, EXIT_PREFLIGHT, EXIT_MIGRATION)
#: Failures that are not the job's own (a full disk, the Hub or the network away): a restart
#: resumes from the newest checkpoint instead of refusing; unfixed, it fails the same way again.
RESUMED_ON_START = (EXIT_DISK_FULL, EXIT_UNAVAILABLE)
#: A stop, not a failure: the job's state stays "running" so that a restart resumes.
STOPPED = (EXIT_INTERRUPTED, EXIT_STOPPED)
