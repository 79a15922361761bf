"""The parent process (the pod's main, before and after the training processes): the startup
report, the job's state on the volume, the platform's routes, the launch, the Hub upload."""
