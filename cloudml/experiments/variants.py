"""The sweep's variants: named sets of overrides on one base config.

A variant is {"name": str, "overrides": {key: value}}. Every variant is checked against the
base config (unknown keys and bad values named with the variant), and the keys that define
what is compared with what are shared: all variants see the same flights, are ranked on the
same selection split and are scored on the same validation flight.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cloudml.config import build_config
from cloudml.errors import ConfigError
from cloudml.experiments import ITEM_NAME, item_label

MAX_VARIANTS = 16  # a bounded telemetry label, and each variant is a full ensemble training
# the data, the selection split and the scored flight: the same for every variant
SHARED_KEYS = ("flights", "validation_flight", "val_fraction", "scale")
DEFAULT_FILE = "sweep_variants.yaml"


def default_variants() -> list[dict[str, Any]]:
    """The built-in variants: tuned and the seed's five alternatives (sweep_variants.yaml)."""
    text = (resources.files("cloudml.experiments") / DEFAULT_FILE).read_text()
    return parse_variants(yaml.safe_load(text), f"cloudml/experiments/{DEFAULT_FILE}")


def load_variants(path: str | Path | None) -> list[dict[str, Any]]:
    """The variants in a YAML file (a list of {name, overrides}), or the defaults for None."""
    if path is None:
        return default_variants()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: variants file does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return parse_variants(raw, str(path))


def parse_variants(raw: Any, where: str) -> list[dict[str, Any]]:
    """Check the shape of a variants list (names unique and label-safe, overrides mappings
    of shared-free keys); returns it normalised. Values are checked by variant_configs."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: expected a non-empty list of {{name, overrides}}")
    problems, out, seen = [], [], set()
    for i, v in enumerate(raw):
        if not isinstance(v, dict) or set(v) - {"name", "overrides"} or "name" not in v:
            problems.append(f"variant {i}: expected {{name: ..., overrides: {{...}}}}, got {v!r}")
            continue
        name, over = str(v["name"]), v.get("overrides") or {}
        if not ITEM_NAME.match(name):
            problems.append(f"variant {i}: name {name!r} must match {ITEM_NAME.pattern}")
        if name in seen:
            problems.append(f"variant {name}: name used twice")
        seen.add(name)
        if not isinstance(over, dict):
            problems.append(f"variant {name}: overrides must be a mapping, got {over!r}")
            continue
        shared = sorted(set(over) & set(SHARED_KEYS))
        if shared:
            problems.append(
                f"variant {name}: {', '.join(shared)} cannot differ between variants (every "
                "variant sees the same flights, selection split and validation flight)"
            )
        out.append({"name": name, "overrides": dict(over)})
    if len(raw) > MAX_VARIANTS:
        problems.append(f"{len(raw)} variants: at most {MAX_VARIANTS}")
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
    return out


def variant_configs(base_json: str, variants: list[dict[str, Any]]) -> list[str]:
    """One validated config JSON per variant: the base config with the variant's overrides,
    labelled `sweep.<name>` (every problem of every variant listed at once)."""
    variants = parse_variants(variants, "variants")
    base = json.loads(base_json)
    base.pop("preset", None)
    configs, problems = [], []
    for v in variants:
        try:
            cfg = build_config({**base, **v["overrides"]}, preset=item_label("sweep", v["name"]))
        except ConfigError as e:
            problems.append(f"variant {v['name']}: {e}")
            continue
        configs.append(cfg.to_json())
    if problems:
        raise ConfigError("\n".join(problems))
    return configs
