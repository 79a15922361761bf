"""The job's configuration: the environment read once, the job schema, the platform's nested
configuration mapped onto it, and the exit codes the pod stops with."""
