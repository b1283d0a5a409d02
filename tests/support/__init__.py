"""Helpers for the test suite (imported as `tests.support.<module>`; no tests in here).

- servers: real SeaweedFS (S3), Pushgateway and Prometheus processes, as pytest fixtures
- loopback: the HTTP plumbing of the two API stand-ins below
- kfp_standin: a loopback stand-in for the KFP v2beta1 REST API (submit / schedule)
- k8s_standin: a loopback stand-in for the Kubernetes API reads of `cloudml preflight`
- rawfiles: small raw flights (IRAI, CPL, nav) in the instruments' layout
- train_fixtures: tiny in-memory shards and fast training settings
- skips: `skip_or_fail`, for tests that need a binary or tool that may be missing
"""
