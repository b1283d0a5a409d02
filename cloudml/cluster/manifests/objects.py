"""Lookups over rendered Kubernetes objects (the dicts `kubectl kustomize` prints)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def is_builtin(doc: dict[str, Any]) -> bool:
    """True for core/apps/batch/*.k8s.io kinds (in kubernetes-validate's schemas), not CRDs."""
    group = str(doc.get("apiVersion", "")).rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def ref(doc: dict[str, Any]) -> str:
    """`Kind/name`, how every problem line names an object."""
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def find(docs: Iterable[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
    """The first object of `kind` named `name`, or None."""
    for d in docs:
        if d.get("kind") == kind and d.get("metadata", {}).get("name") == name:
            return d
    return None
