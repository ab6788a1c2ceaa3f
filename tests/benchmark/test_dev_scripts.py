"""The GPU shell scripts in dev/ parse, and every repository path they name exists."""

import glob
import os
import re
import subprocess

import pytest

from dualalign.utils.paths import repo_root

SCRIPTS = sorted(glob.glob(os.path.join(repo_root(), "dev", "*.sh")))


def test_the_gpu_scripts_run_the_benchmark_commands():
    names = {os.path.basename(s): open(s).read() for s in SCRIPTS}
    assert {"device_env.sh", "gpu_check.sh", "gpu_grid.sh", "gpu_protocol.sh"} <= set(names)
    assert "scripts/run_protocol.py" in names["gpu_protocol.sh"]
    assert "scripts/bench.py" in names["gpu_check.sh"]
    assert "scripts/profile_step.py" in names["gpu_grid.sh"]
    runners = ("gpu_check.sh", "gpu_grid.sh", "gpu_protocol.sh")
    assert all("source dev/device_env.sh" in names[n] for n in runners)


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_dev_script_parses_and_names_existing_paths(script):
    proc = subprocess.run(["bash", "-n", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = open(script).read()
    named = set(re.findall(r"\b((?:scripts|dev|configs)/[\w./-]+\.(?:py|sh|yaml))\b", text))
    named |= set(re.findall(r"\b(train_net\.py)\b", text))
    missing = [p for p in sorted(named) if not os.path.isfile(os.path.join(repo_root(), p))]
    assert not missing, f"{os.path.basename(script)} names missing files: {missing}"
