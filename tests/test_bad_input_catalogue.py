"""Every command line catalogued in docs/reliability.md ('Found from outside: command lines')
runs through the CLI and fails cleanly: the catalogued exit code, exactly one `error:` line
naming what the row says, no traceback, no advice to switch off torch.load's weights-only
check, and not one new file left behind.

The rows are read from the doc; _SETUP names, per row id, how the shared fixture directory
is changed before the command runs (and a row without a _SETUP entry, or an entry without a
row, fails the test)."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from cloudml.cli import main
from cloudml.data import layout
from cloudml.flights import flight_paths
from tests.support.rawfiles import flight_arrays, write_flight
from tests.support.train_fixtures import write_shards

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
SECTION = "### Found from outside: command lines"
ROW = re.compile(r"tests/test_bad_input_catalogue\.py::test_catalogued_invocation\[([\w-]+)\]")
ERROR_LINE = re.compile(r"^(cloudml( \w+)?: )?error: ")  # ours, or argparse's


def catalogue() -> dict[str, tuple[list[str], int, list[str]]]:
    """{row id: (argv after `cloudml`, exit code, texts the error must hold)} from the doc."""
    text = DOC.read_text().split(SECTION, 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not (m := ROW.fullmatch(cells[4])):
            continue
        invocation = cells[1].strip("`")
        assert invocation.startswith("cloudml "), line
        needles = re.findall(r"`([^`]+)`", cells[3])
        rows[m.group(1)] = (shlex.split(invocation)[1:], int(cells[2]), needles)
    return rows


ROWS = catalogue()


# --- fixture changes per row -------------------------------------------------------------------
def _paths() -> tuple[Path, Path, Path]:
    return flight_paths(Path("raw"), "30Oct24")


def _irai_is_dir() -> None:
    irai = _paths()[0]
    irai.unlink()
    irai.mkdir()


def _irai_symlink_loop() -> None:
    irai = _paths()[0]
    irai.unlink()
    os.symlink(irai.name, irai)  # resolves to itself


def _nav_dangling_link() -> None:
    nav = _paths()[2]
    nav.unlink()
    os.symlink("gone.hdf", nav)


def _dead_sensor() -> None:
    a = flight_arrays(n_frames=30)
    layout.write_irai(_paths()[0], np.full_like(a["signal"], 1000), a["frame_time"])


def _cpl_year_wrong() -> None:
    cpl = _paths()[1]  # ..._30oct24.hdf5; the year comes from the name only
    cpl.rename(cpl.with_name(cpl.name.replace("30oct24", "30oct25")))


def _list_preset() -> None:
    Path("list.yaml").write_text("- learning_rate\n- 0.1\n")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def _evil_checkpoint() -> None:
    torch.save({"model": _Evil()}, "evil.pt")


def _cut_checkpoint() -> None:
    torch.save({"model": {"w": torch.zeros(64)}, "stage": "pretrain"}, "cut.pt")
    data = Path("cut.pt").read_bytes()
    Path("cut.pt").write_bytes(data[: len(data) // 2])


_SETUP = {
    "ingest_out_is_dir": None,
    "compile_out_is_dir": None,
    "synth_out_is_file": None,
    "pretrain_out_is_file": None,
    "pretrain_out_under_file": None,
    "upload_dest_is_file": None,
    "upload_src_is_file": None,
    "synth_negative_seed": None,
    "raw_dir_is_file": None,
    "flight_folder_missing": None,
    "irai_is_dir": _irai_is_dir,
    "irai_symlink_loop": _irai_symlink_loop,
    "nav_dangling_link": _nav_dangling_link,
    "dead_sensor": _dead_sensor,
    "instrument_times_disjoint": _cpl_year_wrong,
    "temporal_frames_absurd": None,
    "batch_size_absurd": None,
    "seed_negative": None,
    "learning_rate_nan": None,
    "preset_is_dir": None,
    "preset_not_mapping": _list_preset,
    "pipeline_preset_path": _list_preset,
    "checkpoint_pickle": _evil_checkpoint,
    "checkpoint_truncated": _cut_checkpoint,
    "checkpoint_is_dir": None,
    "shard_is_dir": None,
    "gate_metrics_is_dir": None,
    "usage_unknown_option": None,
}


def test_every_catalogued_row_has_a_setup_and_every_setup_a_row():
    assert len(ROWS) >= 25
    assert sorted(ROWS) == sorted(_SETUP)


def _world(tmp_path: Path) -> None:
    """The shared fixture directory every row starts from (cwd = tmp_path)."""
    write_flight(Path("raw"), "30Oct24", flight_arrays(n_frames=30))
    write_shards(Path("shards"), ["30Oct24", "12Feb25"], n=20)
    Path("adir").mkdir()
    Path("afile").write_text("a file where a directory or another file was expected\n")


def _files(root: Path) -> set[str]:
    """Every file and link under root (directories aside), as relative paths."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_symlink() or not p.is_dir()}


@pytest.mark.parametrize("case", sorted(ROWS))
def test_catalogued_invocation(tmp_path, monkeypatch, capsys, case):
    argv, want_rc, needles = ROWS[case]
    monkeypatch.chdir(tmp_path)
    _world(tmp_path)
    if _SETUP[case] is not None:
        _SETUP[case]()
    before = _files(tmp_path)
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse: usage errors
        rc = e.code
    out, err = capsys.readouterr()
    assert rc == want_rc, err
    errors = [ln for ln in err.splitlines() if ERROR_LINE.match(ln)]
    assert len(errors) == 1, err
    message = err[err.index(errors[0]) :]  # a config listing continues on further lines
    for needle in needles:
        assert needle in message, (needle, err)
    assert "Traceback" not in err and "weights_only" not in err, err
    assert _files(tmp_path) == before  # no output, no temp file
    assert not Path("this must never run").exists()
