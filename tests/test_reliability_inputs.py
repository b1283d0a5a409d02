"""Bad-input catalogue: each malformed raw file, configuration or environment goes through the
real CLI (cloudml.cli.main), exits non-zero with a message naming the file / dataset / key /
endpoint at fault, and leaves no partial output. Rows already covered elsewhere are listed in
docs/reliability.md with their tests; these are the rest."""

from __future__ import annotations

import re

import h5py
import numpy as np
import pytest

from cloudml.cli import main
from cloudml.data import layout
from cloudml.store.backends import S3Store
from tests.support.rawfiles import flight_arrays, write_flight
from tests.support.servers import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.support.train_fixtures import FAST, write_shards


def _replace(path, name, data):
    with h5py.File(path, "a") as f:
        del f[name]
        f.create_dataset(name, data=data)


def _ingest(tmp_path, *extra):
    out = tmp_path / "out" / "30Oct24.h5"
    argv = ["ingest", "--raw", str(tmp_path / "raw"), "--flight", "30Oct24", "--out", str(out)]
    return main([*argv, *extra]), out


def _nothing_written(out):
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []  # no temp file either


# --- raw files -----------------------------------------------------------------------------
def _raw_case(kind, paths, a):
    """Break one raw file; return (index of the file that must be named, regex for the what)."""
    irai, cpl, nav = paths
    n = len(a["frame_time"])
    if kind == "string_signal":
        _replace(irai, layout.IRAI_SIGNAL, np.array([[[b"x"] * 20] * 16] * n))
        return 0, f"{layout.IRAI_SIGNAL} has dtype \\|S1, expected a real numeric"
    if kind == "string_time":
        _replace(irai, layout.IRAI_TIME, np.array([b"t"] * n))
        return 0, f"{layout.IRAI_TIME} has dtype"
    if kind == "string_nav":
        _replace(nav, layout.NAV_SZA, np.array([b"s"] * n))
        return 2, f"{layout.NAV_SZA} has dtype"
    if kind == "all_frames_nan":
        _replace(irai, layout.IRAI_SIGNAL, np.full(a["signal"].shape, np.nan, np.float32))
        return 0, r"no matched samples .*bad_frame=26"
    if kind == "all_frames_inf":
        _replace(irai, layout.IRAI_SIGNAL, np.full(a["signal"].shape, np.inf, np.float32))
        return 0, r"no matched samples .*bad_frame"
    if kind == "empty_signal":
        _replace(irai, layout.IRAI_SIGNAL, np.zeros((0, 16, 20), np.uint16))
        _replace(irai, layout.IRAI_TIME, np.zeros(0))
        return 0, f"{layout.IRAI_SIGNAL} is empty"
    if kind == "cpl_jday_rank_1":
        _replace(cpl, layout.CPL_JDAY, a["jday"][:, 0])
        return 1, f"{layout.CPL_JDAY} has rank 1"
    if kind == "cpl_base_all_nan":
        _replace(cpl, layout.CPL_BASE, np.full_like(a["base"], np.nan))
        return 1, r"no matched samples .*fill=30"
    if kind == "nav_longer_than_images":
        _replace(nav, layout.NAV_SZA, np.r_[a["sza"], 1.0])
        return 2, f"{layout.NAV_SZA} has 31 entries, expected 30"
    if kind == "nav_not_hdf5":
        nav.write_text("not an HDF5 file\n")
        return 2, "not a readable HDF5 file"
    if kind == "too_few_frames_for_window":
        for name, data in ((layout.IRAI_SIGNAL, a["signal"][:3]),
                           (layout.IRAI_TIME, a["frame_time"][:3])):  # fmt: skip
            _replace(irai, name, data)
        _replace(nav, layout.NAV_SZA, a["sza"][:3])
        _replace(nav, layout.NAV_SAA, a["saa"][:3])
        return 0, r"no matched samples .* against 3 frames"
    raise AssertionError(kind)


RAW_CASES = [
    "string_signal", "string_time", "string_nav", "all_frames_nan", "all_frames_inf",
    "empty_signal", "cpl_jday_rank_1", "cpl_base_all_nan", "nav_longer_than_images",
    "nav_not_hdf5", "too_few_frames_for_window",
]  # fmt: skip


@pytest.mark.parametrize("kind", RAW_CASES)
def test_bad_raw_file_through_cli(tmp_path, capsys, kind):
    a = flight_arrays(n_frames=30)
    paths = write_flight(tmp_path / "raw", "30Oct24", a)
    which, what = _raw_case(kind, paths, a)
    rc, out = _ingest(tmp_path)
    err = capsys.readouterr().err
    assert rc == 1, err
    assert err.startswith("error: ") and "Traceback" not in err
    assert str(paths[which]) in err, err
    assert re.search(what, err), err
    _nothing_written(out)


# --- configuration ---------------------------------------------------------------------------
CONFIG_CASES = {
    "unknown_key": (["--set", "learning_rat=0.1"], "unknown key 'learning_rat'"),
    "wrong_type_int": (["--set", "epochs=abc"], "epochs: expected an integer, got 'abc'"),
    "wrong_type_bool": (["--set", "augment=sometimes"], "augment: expected true/false"),
    "out_of_range_zero": (["--set", "temporal_frames=0"], "temporal_frames: must be >= 1"),
    "out_of_range_negative": (["--set", "learning_rate=-1"], "learning_rate: must be > 0"),
    "swath_beyond_frame": (["--set", "swath_slice=[40,4800]"], "swath_slice: need 0 <= start"),
    "validation_is_pretrain": (
        ["--set", "validation_flight=30Oct24"],
        "validation_flight must differ from pretrain_flight",
    ),
    "duplicate_flights": (["--set", "flights=[30Oct24,30Oct24]"], "flights: duplicates"),
    "unknown_flight": (["--set", "pretrain_flight=01Jan99"], "unknown flight '01Jan99'"),
    "override_not_key_value": (["--set", "epochs"], "override 'epochs' is not key=value"),
    "unknown_preset": (["--preset", "nope"], "unknown preset 'nope'; known presets: baseline"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config_through_cli(tmp_path, capsys, case):
    write_flight(tmp_path / "raw", "30Oct24")
    extra, needle = CONFIG_CASES[case]
    rc, out = _ingest(tmp_path, *extra)
    err = capsys.readouterr().err
    assert rc == 1 and needle in err, err
    _nothing_written(out)


def test_every_config_problem_listed_at_once(tmp_path, capsys):
    write_flight(tmp_path / "raw", "30Oct24")
    extra = [x for case in ("unknown_key", "wrong_type_int", "out_of_range_negative")
             for x in CONFIG_CASES[case][0]]  # fmt: skip
    rc, out = _ingest(tmp_path, *extra)
    err = capsys.readouterr().err
    assert rc == 1 and "3 problem(s)" in err
    for case in ("unknown_key", "wrong_type_int", "out_of_range_negative"):
        assert CONFIG_CASES[case][1] in err
    _nothing_written(out)


# --- environment ------------------------------------------------------------------------------
def test_unwritable_output_dir_is_named(tmp_path, capsys):
    write_flight(tmp_path / "raw", "30Oct24")
    blocker = tmp_path / "out"
    blocker.write_text("a file where the output directory should be")
    rc = main(["ingest", "--raw", str(tmp_path / "raw"), "--flight", "30Oct24",
               "--out", str(blocker / "30Oct24.h5")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert f"cannot write {blocker / '30Oct24.h5'}" in err and "not writable" in err
    assert blocker.read_text().startswith("a file where")


def test_corrupt_shard_given_to_training(tmp_path, capsys):
    shard = write_shards(tmp_path, ["30Oct24"], n=20)["30Oct24"]
    shard.write_bytes(shard.read_bytes()[:2000])
    out = tmp_path / "pretrain"
    argv = ["pretrain", "--shard", str(shard), "--out", str(out)]
    for k, v in FAST.items():
        argv += ["--set", f"{k}={str(v).lower() if isinstance(v, bool) else v}"]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 1 and str(shard) in err and "truncated file" in err, err
    assert not out.exists() or list(out.iterdir()) == []


def test_missing_pretrained_checkpoint_for_finetune(tmp_path, capsys):
    shards = write_shards(tmp_path, ["30Oct24", "04Nov24"], n=20)
    missing = tmp_path / "nowhere" / "model.pt"
    out = tmp_path / "finetune"
    argv = ["finetune", "--pretrained", str(missing), "--out", str(out)]
    for p in shards.values():
        argv += ["--shard", str(p)]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 1 and f"{missing}: checkpoint does not exist" in err, err
    assert not out.exists() or list(out.iterdir()) == []


ENV_CASES = {
    "endpoint_with_path": ({"MINIO_ENDPOINT": "http://bad host:99/x"}, "invalid S3 endpoint"),
    "endpoint_unset": ({"MINIO_ENDPOINT": ""}, "needs MINIO_ENDPOINT"),
    "endpoint_unreachable": (
        {"MINIO_ENDPOINT": "127.0.0.1:9", "CLOUDML_STORE_RETRIES": "1"},
        "s3://t-env at http://127.0.0.1:9: endpoint unreachable",
    ),
    "secure_not_bool": (
        {"MINIO_ENDPOINT": "127.0.0.1:9", "MINIO_SECURE": "maybe"}, "MINIO_SECURE must be"),
    "retries_not_number": (
        {"MINIO_ENDPOINT": "127.0.0.1:9", "CLOUDML_STORE_RETRIES": "abc"},
        "CLOUDML_STORE_RETRIES",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(ENV_CASES))
def test_bad_store_environment_through_cli(tmp_path, capsys, monkeypatch, case):
    write_flight(tmp_path / "raw", "30Oct24")
    env, needle = ENV_CASES[case]
    for k in ("MINIO_ENDPOINT", "MINIO_SECURE", "CLOUDML_STORE_RETRIES", "MINIO_SECRET_KEY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MINIO_SECRET_KEY", S3_SECRET_KEY)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    rc = main(["upload", "--src", str(tmp_path / "raw" / "30Oct24"),
               "--dest", "s3://t-env/raw/30Oct24"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1 and needle in err and "Traceback" not in err, err
    assert S3_SECRET_KEY not in err


@pytest.mark.servers
def test_bad_credentials_through_cli_write_nothing(s3_server, tmp_path, capsys, monkeypatch):
    write_flight(tmp_path / "raw", "30Oct24")
    good = S3Store(s3_server.endpoint, "t-reliability", prefix="cred", access_key=S3_ACCESS_KEY,
                   secret_key=S3_SECRET_KEY)  # fmt: skip
    good.ensure_bucket()
    wrong = S3_SECRET_KEY + "-wrong"
    for k, v in s3_server.env(secret=wrong).items():
        monkeypatch.setenv(k, v)
    rc = main(["upload", "--src", str(tmp_path / "raw" / "30Oct24"),
               "--dest", "s3://t-reliability/cred/raw/30Oct24"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1 and "credentials refused" in err and s3_server.endpoint in err, err
    assert "MINIO_SECRET_KEY" in err and wrong not in err and S3_SECRET_KEY not in err
    assert good.list("") == []


def _file_case(case, tmp_path):
    """(argv, path that must be named, text that must be named, dir that must stay empty)."""
    out = tmp_path / "out"
    shards = write_shards(tmp_path / "shards", ["30Oct24", "12Feb25"], n=20)
    if case == "upload_src_missing":
        src = tmp_path / "no-such-dir"
        return (
            ["upload", "--src", str(src), "--dest", str(out / "p")],
            src,
            "is not a directory",
            out,
        )
    if case == "same_flight_twice":
        copy = tmp_path / "copy.h5"
        copy.write_bytes(shards["30Oct24"].read_bytes())
        argv = [
            "pretrain",
            "--shard",
            str(shards["30Oct24"]),
            "--shard",
            str(copy),
            "--out",
            str(out),
        ]
        return argv, copy, "flight 30Oct24 already given", out
    if case == "truncated_checkpoint":
        ckpt = tmp_path / "model.pt"
        ckpt.write_bytes(b"PK\x03\x04 not really a zip")
        argv = ["evaluate", "--shard", str(shards["12Feb25"]), "--checkpoint", str(ckpt),
                "--out", str(out)]  # fmt: skip
        return argv, ckpt, "not a readable checkpoint", out
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case", ["upload_src_missing", "same_flight_twice", "truncated_checkpoint"]
)
def test_bad_file_argument_through_cli(tmp_path, capsys, case):
    argv, named, what, out = _file_case(case, tmp_path)
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 1 and str(named) in err and what in err and "Traceback" not in err, err
    assert not out.exists() or list(out.rglob("*")) == []
