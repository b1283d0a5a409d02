"""Thread count from fake cgroup trees: v2 cpu.max, v1 CFS quota, affinity, CLOUDML_THREADS."""

from pathlib import Path

import pytest

from cloudml.errors import ConfigError
from cloudml.threads import (
    cgroup_cpu_limit,
    configure_torch_threads,
    prepare_process_env,
    thread_count,
)

V2 = "0::/kubepods/pod1/ctr\n"
V1 = "12:cpu,cpuacct:/kubepods/pod1/ctr\n11:memory:/kubepods/pod1/ctr\n"


def _write(root: Path, rel: str, name: str, text: str) -> None:
    d = root / rel
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(text + "\n")


def test_v2_quota_rounds_down_and_caps_affinity(tmp_path):
    _write(tmp_path, "kubepods/pod1/ctr", "cpu.max", "250000 100000")  # 2.5 CPUs
    assert cgroup_cpu_limit(tmp_path, V2) == 2.5
    assert thread_count({}, cgroup_root=tmp_path, proc_cgroup=V2, affinity=64) == 2
    # the affinity mask is smaller than the quota: it wins
    assert thread_count({}, cgroup_root=tmp_path, proc_cgroup=V2, affinity=1) == 1


def test_v2_unlimited_leaves_affinity(tmp_path):
    _write(tmp_path, "kubepods/pod1/ctr", "cpu.max", "max 100000")
    assert cgroup_cpu_limit(tmp_path, V2) is None
    assert thread_count({}, cgroup_root=tmp_path, proc_cgroup=V2, affinity=8) == 8


def test_v2_quota_of_a_parent_cgroup_applies(tmp_path):
    _write(tmp_path, "kubepods/pod1/ctr", "cpu.max", "max 100000")
    _write(tmp_path, "kubepods/pod1", "cpu.max", "400000 100000")  # the pod's limit: 4
    assert thread_count({}, cgroup_root=tmp_path, proc_cgroup=V2, affinity=64) == 4


def test_v2_quota_below_one_cpu_gives_one_thread(tmp_path):
    _write(tmp_path, "kubepods/pod1/ctr", "cpu.max", "50000 100000")
    assert thread_count({}, cgroup_root=tmp_path, proc_cgroup=V2, affinity=16) == 1


def test_v1_cfs_quota(tmp_path):
    base = "cpu,cpuacct/kubepods/pod1/ctr"
    _write(tmp_path, base, "cpu.cfs_quota_us", "300000")
    _write(tmp_path, base, "cpu.cfs_period_us", "100000")
    assert cgroup_cpu_limit(tmp_path, V1) == 3.0
    assert thread_count({}, cgroup_root=tmp_path, proc_cgroup=V1, affinity=64) == 3
    (tmp_path / base / "cpu.cfs_quota_us").write_text("-1\n")  # no quota
    assert thread_count({}, cgroup_root=tmp_path, proc_cgroup=V1, affinity=64) == 64


def test_unreadable_or_garbled_cgroup_files_mean_no_quota(tmp_path):
    _write(tmp_path, "kubepods/pod1/ctr", "cpu.max", "garbage")
    assert cgroup_cpu_limit(tmp_path, V2) is None
    assert cgroup_cpu_limit(tmp_path / "absent", V2) is None


def test_cpu_request_caps_threads_but_never_exceeds_the_machine(tmp_path):
    # the pipeline tells each task its CPU request; a local run on 2 cores takes 2, not 4
    assert thread_count({"CLOUDML_CPU_REQUEST": "4"}, proc_cgroup="", affinity=64) == 4
    assert thread_count({"CLOUDML_CPU_REQUEST": "4"}, proc_cgroup="", affinity=2) == 2
    assert thread_count({"CLOUDML_CPU_REQUEST": "0.5"}, proc_cgroup="", affinity=8) == 1
    with pytest.raises(ConfigError, match="CLOUDML_CPU_REQUEST"):
        thread_count({"CLOUDML_CPU_REQUEST": "lots"}, proc_cgroup="", affinity=8)


def test_explicit_setting_beats_quota_and_affinity(tmp_path):
    _write(tmp_path, "kubepods/pod1/ctr", "cpu.max", "200000 100000")
    env = {"CLOUDML_THREADS": "6"}
    assert thread_count(env, cgroup_root=tmp_path, proc_cgroup=V2, affinity=64) == 6


@pytest.mark.parametrize("bad", ["0", "-2", "four", "100000"])
def test_explicit_setting_is_validated(bad):
    with pytest.raises(ConfigError, match="CLOUDML_THREADS"):
        thread_count({"CLOUDML_THREADS": bad}, affinity=2)


def test_prepare_process_env_keeps_what_the_user_set():
    env = {"CLOUDML_THREADS": "3"}
    assert prepare_process_env(env) == 3
    assert env["OMP_NUM_THREADS"] == "3"
    user = {"CLOUDML_THREADS": "3", "OMP_NUM_THREADS": "1"}
    prepare_process_env(user)
    assert user["OMP_NUM_THREADS"] == "1" and "OMP_WAIT_POLICY" not in user


def test_torch_threads_follow_cloudml_threads_but_respect_a_given_omp_setting():
    import torch

    before = torch.get_num_threads()
    try:
        assert configure_torch_threads({"CLOUDML_THREADS": "1"}) == 1
        assert torch.get_num_threads() == 1
        # started with OMP_NUM_THREADS (by the user, or by `cloudml run` for its tasks): kept
        torch.set_num_threads(2)
        assert configure_torch_threads({"OMP_NUM_THREADS": "1"}) == 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
