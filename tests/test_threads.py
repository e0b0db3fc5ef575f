"""The command line runs torch on the cores the process may use (ssah_audit/threads.py): a container's CPU quota caps
the threads, a user's OMP_NUM_THREADS or SSAH_AUDIT_THREADS wins, and a bad SSAH_AUDIT_THREADS is one line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ssah_audit.errors import UserError
from ssah_audit.threads import available_cores, cgroup_quota, use_available_cores


def quota_root(tmp_path, v2: str | None = None, v1: tuple[str, str] | None = None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2)
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(v1[0])
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(v1[1])
    return tmp_path


def test_the_cgroup_quota_is_read_in_either_version(tmp_path):
    assert cgroup_quota(quota_root(tmp_path / "a", v2="150000 100000\n")) == 1.5
    assert cgroup_quota(quota_root(tmp_path / "b", v2="max 100000\n")) is None
    assert cgroup_quota(quota_root(tmp_path / "c", v1=("200000", "100000"))) == 2.0
    assert cgroup_quota(quota_root(tmp_path / "d", v1=("-1", "100000"))) is None
    assert cgroup_quota(tmp_path / "nothing") is None


def test_threads_are_the_cores_the_process_may_use(tmp_path):
    mine = len(os.sched_getaffinity(0))
    assert available_cores(tmp_path / "nothing") == mine
    assert available_cores(quota_root(tmp_path / "half", v2="50000 100000")) == 1  # at least one
    assert available_cores(quota_root(tmp_path / "many", v2=f"{100000 * (mine + 8)} 100000")) == mine
    environ = {}
    assert use_available_cores(environ, quota_root(tmp_path / "one", v2="120000 100000")) == "1"
    assert environ == {"OMP_NUM_THREADS": "1"}
    assert use_available_cores({"OMP_NUM_THREADS": "3"}, tmp_path / "one") == "3"  # the user's, untouched
    assert use_available_cores({"OMP_NUM_THREADS": "3", "SSAH_AUDIT_THREADS": "2"}) == "2"
    with pytest.raises(UserError, match="SSAH_AUDIT_THREADS"):
        use_available_cores({"SSAH_AUDIT_THREADS": "two"})


def test_the_command_line_sets_the_threads_before_torch_and_refuses_a_bad_value():
    environment = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    code = ("import sys, os; from ssah_audit.cli import app; from typer.testing import CliRunner; "
            "CliRunner().invoke(app, ['cache', 'list']); import torch; "
            "print(os.environ['OMP_NUM_THREADS'], torch.get_num_threads())")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=environment | {"SSAH_AUDIT_THREADS": "1"})
    assert found.stdout.split() == ["1", "1"], found.stderr
    bad = subprocess.run([sys.executable, "-m", "ssah_audit.cli", "cache", "list"], capture_output=True, text=True,
                         env=environment | {"SSAH_AUDIT_THREADS": "lots"})
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "SSAH_AUDIT_THREADS" in bad.stderr
