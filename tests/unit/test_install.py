"""A wheel installed outside the source tree works: `plan --help`, a profile, and the bundled TOML data."""
from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig

from conftest import EXAMPLES, ROOT


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300, **kw)


def test_wheel_installs_and_runs_outside_the_tree(tmp_path):
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
         str(tmp_path / "dist"), str(ROOT)])
    wheel = next((tmp_path / "dist").glob("planner-*.whl"))
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    run([base, "-m", "venv", "--system-site-packages", str(venv)])
    py = venv / "bin" / "python"
    # the dev environment's packages (torch among them) stay visible, so nothing is installed twice
    purelib = run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    with open(os.path.join(purelib, "dev_env.pth"), "w") as f:
        f.write("\n".join([sysconfig.get_paths()["purelib"], *site.getsitepackages()]) + "\n")
    run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PLANNER_CACHE_DIR"] = str(tmp_path / "cache")
    cwd = tmp_path  # not the source tree: imports must come from the wheel
    out = run([str(venv / "bin" / "plan"), "--help"], cwd=cwd, env=env).stdout
    assert "profile" in out
    out = run([str(venv / "bin" / "plan"), "profile", str(EXAMPLES / "gpt.py:tiny")], cwd=cwd, env=env).stdout
    assert "blocks.0-3 (x4)" in out
    where = run([str(py), "-c", "import planner, profiles, importlib.resources as r; print(planner.__file__); "
                 "print(sorted(p.name for p in r.files('profiles').joinpath('gpus').iterdir()))"],
                cwd=cwd, env=env).stdout
    assert str(venv) in where.splitlines()[0]
    assert "'a100-80gb.toml'" in where.splitlines()[1] and "'cpu.toml'" in where.splitlines()[1]
    # the templates and the runtime package ship too: emit a program from the installed wheel
    run([str(venv / "bin" / "plan"), str(EXAMPLES / "gpt.py:tiny"), "--gpus", "2", "--gpu", "cpu", "--dp", "2",
         "--emit", str(tmp_path / "prog")], cwd=cwd, env=env)
    for name in ("train.py", "launch.sh", "slurm.sbatch", "README.md", "planner_runtime/__init__.py",
                 "planner_runtime/policy.py"):
        assert (tmp_path / "prog" / name).is_file(), name
