"""Render and check every kustomize overlay under manifests/: `make manifests-check`.

    python -m cloudml.cluster.manifests manifests

Per overlay: `kubectl kustomize` renders it; `kubernetes-validate --strict` checks every
built-in kind against the Kubernetes 1.30 schemas (unknown fields fail); every pod template
meets the "restricted" Pod Security Standard with resource requests and limits; the names
agree with cloudml/cluster/settings.py. Once: `promtool check rules` and `promtool test rules` on the
PrometheusRule, the Grafana dashboard parses, and every metric name in the dashboard and
the alerts is in cloudml.cluster.telemetry.METRIC_NAMES. One PASS/FAIL line per check; exit 1 on
any failure.

    objects.py         lookups over rendered objects (dicts): ref, find, is_builtin
    pod_security.py    the "restricted" Pod Security Standard, requests and limits
    platform_names.py  names, ports and endpoints agree with cloudml/cluster/settings.py
    metric_names.py    dashboard and alert queries use only the metric contract
    tools.py           the subprocesses: kubectl kustomize, kubernetes-validate, promtool
    runner.py          every check over a manifests tree, the report, `main`

The checks are pure functions over rendered objects; only tools.py touches subprocesses.
"""
