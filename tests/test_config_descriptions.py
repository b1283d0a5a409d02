"""Every config key has one description (beside its field in cloudml.config), and
docs/config.md is the table generated from them and the presets.

Regenerate the doc after changing a key or a preset:
    python -m tests.test_config_descriptions
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cloudml.config import SECTIONS, key_help, load_config, pipeline_keys, preset_names

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"
HEAD = """# Configuration keys

Generated from `cloudml/config.py` (each key's description sits beside its field) and the
presets in `cloudml/presets/`; `tests/test_config_descriptions.py` fails when this file is out
of date (regenerate: `python -m tests.test_config_descriptions`). The same descriptions are
the Kubeflow pipeline's parameter descriptions. Override any key with `--set key=value`.
Keys marked "config only" have a single implemented value and are not pipeline parameters.
"""


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def render() -> str:
    """docs/config.md's text: one table per section, a row per key."""
    presets = preset_names()
    flat = {p: load_config(p).flat() for p in presets}
    helps, params = key_help(), set(pipeline_keys())
    out = [HEAD.rstrip()]
    for section, cls in SECTIONS.items():
        out += ["", f"## {section}", "", "| key | " + " | ".join(presets) + " | description |"]
        out.append("|---" * (len(presets) + 2) + "|")
        for f in dataclasses.fields(cls):
            text = " ".join(helps[f.name].split()).replace("|", "\\|")
            if f.name not in params:
                text += " (config only)"
            cells = [f"`{f.name}`", *(_cell(flat[p][f.name]) for p in presets), text]
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def test_every_key_has_a_description():
    helps = key_help()
    keys = [f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)]
    assert list(helps) == keys  # every key, in definition order
    short = [k for k, h in helps.items() if len(h.split()) < 5]
    assert not short, f"config key(s) without a usable description: {short}"


def test_single_value_keys_are_not_pipeline_parameters():
    assert {"optimizer", "scheduler"}.isdisjoint(pipeline_keys())
    assert {"learning_rate", "seed", "flights"} <= set(pipeline_keys())


def test_config_doc_is_in_sync():
    assert DOC.is_file(), f"{DOC} missing: run python -m tests.test_config_descriptions"
    assert DOC.read_text() == render(), (
        f"{DOC} is out of date: run python -m tests.test_config_descriptions"
    )


if __name__ == "__main__":
    DOC.write_text(render())
    print(DOC)


def test_config_help_lists_every_key_with_its_description(capsys):
    import pytest

    from cloudml.cli import main

    with pytest.raises(SystemExit) as e:
        main(["config", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for key, desc in key_help().items():
        assert f"{key} {' '.join(desc.split())}" in text, key
