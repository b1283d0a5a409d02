"""Running the pipeline: cluster settings, KFP compile/submit, the local runner, preflight, telemetry, manifest checks."""
