"""The README as a newcomer follows it: every `bash` and `python` block runs, in order, in a fresh copy of
the repository with the environment's `bin` on PATH; the printed outputs it quotes are what the
commands print. (`text` blocks are output, `make` targets, or commands for a GPU cluster.)"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(README.read_text())]


def test_the_readme_has_runnable_blocks_and_only_known_kinds():
    kinds = [k for k, _ in blocks()]
    assert set(kinds) <= {"bash", "python", "text"}, kinds
    assert kinds.count("bash") >= 4 and kinds.count("python") >= 2
    first = next(body for k, body in blocks() if k == "text")  # the two commands come first
    assert first.startswith("make demo") and "\nmake test" in first


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The tracked files only, as a fresh clone has them."""
    dest = tmp_path_factory.mktemp("clone")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in files.splitlines():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.mark.slow
def test_readme_snippets_run_in_order(clone, tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
           "PLANNER_CACHE_DIR": str(tmp_path / "cache")}
    outputs = []
    for kind, body in blocks():
        if kind == "bash":
            proc = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=clone, env=env, capture_output=True,
                                  text=True, timeout=600)
        elif kind == "python":
            proc = subprocess.run([sys.executable, "-c", body], cwd=clone, env=env, capture_output=True, text=True,
                                  timeout=600)
        else:
            continue
        assert proc.returncode == 0, f"{kind} block failed:\n{body}\n{proc.stderr[-3000:]}"
        outputs.append(proc.stdout)
    printed = "\n".join(outputs)
    quoted = next(body for kind, body in blocks() if kind == "text" and body.startswith("params  175G"))
    for line in quoted.splitlines():  # the abridged profile of GPT-3 175B
        assert line in printed, line
    assert (clone / "out" / "tiny" / "metrics.jsonl").is_file() and "done: loss" in printed
    assert (clone / "out" / "llama8b" / "launch.sh").is_file() and (clone / "cluster.png").is_file()


def test_the_quoted_plan_is_the_snapshot():
    snapshot = (ROOT / "tests" / "unit" / "snapshots" / "gpt-tiny-8cpu.txt").read_text().replace("<repo>/", "")
    quoted = next(body for kind, body in blocks() if kind == "text" and body.startswith("model    examples/gpt.py:tiny"))
    assert quoted == snapshot
