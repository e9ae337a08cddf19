"""Every way the command line can be wrong: exit code 2 and one line on stderr that says what is wrong
and what to do, never a traceback. One table, run through `cli.main` as a user would."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli import main

ROOT = Path(__file__).resolve().parents[2]
GPT = f"{ROOT / 'examples' / 'gpt.py'}:tiny"
CPU = ["--gpu", "cpu"]
GOOD_BATCH = "import torch\ndef batch(n): return torch.zeros(n, 4), torch.zeros(n, dtype=torch.long)\n"
LINEAR = "def model(): return torch.nn.Linear(4, 4)\n"

# name: (files to write {name: text or bytes}, argv with {d} for the temp dir, expected part of the line)
CASES = {
    "gpus 8x0": ({}, ["plan", GPT, "--gpus", "8x0"], "the number of nodes must be at least 1"),
    "gpus 0": ({}, ["plan", GPT, "--gpus", "0"], "the GPUs per node must be at least 1"),
    "gpus abc": ({}, ["plan", GPT, "--gpus", "abc"], "expected GPUSxNODES (e.g. 8x6"),
    "gpus 8x": ({}, ["plan", GPT, "--gpus", "8x"], "expected GPUSxNODES"),
    "gpus 8x2x3": ({}, ["plan", GPT, "--gpus", "8x2x3"], "expected GPUSxNODES"),
    "gpus missing": ({}, ["plan", GPT], "the following arguments are required: --gpus"),
    "unknown gpu": ({}, ["plan", GPT, "--gpus", "8", "--gpu", "h900"], "unknown GPU 'h900'; known: a100-40gb"),
    "cluster file missing": ({}, ["plan", GPT, "--gpus", "{d}/none.toml"], "no such cluster file"),
    "cluster file wrong field": ({"c.toml": '[[nodes]]\ngpu = "a100-80gb"\ncount = 2\n'},
                                 ["plan", GPT, "--gpus", "{d}/c.toml"], "nodes[0] is missing field 'preset'"),
    "model file missing": ({}, ["plan", "{d}/nope.py", "--gpus", "8"], "no such model file"),
    "model file is a directory": ({}, ["plan", "{d}", "--gpus", "8"], "is a directory"),
    "model file not text": ({"m.py": b"\xff\xfe\x00\x01"}, ["plan", "{d}/m.py", "--gpus", "8"], "syntax error"),
    "syntax error": ({"m.py": "def model(:\n"}, ["plan", "{d}/m.py", "--gpus", "8"], ":1: syntax error"),
    "import raises": ({"m.py": "raise RuntimeError('boom')\n"}, ["plan", "{d}/m.py", "--gpus", "8"],
                      "importing the model file raised RuntimeError: boom"),
    "no factory": ({"m.py": GOOD_BATCH}, ["plan", "{d}/m.py:big", "--gpus", "8"], "defines no factory 'big()'"),
    "factory raises": ({"m.py": GOOD_BATCH + "def model(): raise ValueError('bad size')\n"},
                       ["plan", "{d}/m.py", "--gpus", "8"], "model() raised ValueError: bad size"),
    "factory returns non-module": ({"m.py": GOOD_BATCH + "def model(): return 3\n"},
                                   ["plan", "{d}/m.py", "--gpus", "8"], "returned int, not a torch.nn.Module"),
    "batch missing": ({"m.py": "import torch\n" + LINEAR}, ["plan", "{d}/m.py", "--gpus", "8"],
                      "defines no batch(batch_size)"),
    "batch wrong type": ({"m.py": "import torch\n" + LINEAR + "def batch(n): return 5\n"},
                         ["plan", "{d}/m.py", "--gpus", "8"], "must return a pair (inputs, targets)"),
    "tp not dividing heads": ({}, ["plan", GPT, "--gpus", "2", *CPU, "--tp", "3"],
                              "splits into whole heads only with tp in 1, 2, 4"),
    "pp deeper than blocks": ({}, ["plan", GPT, "--gpus", "8", *CPU, "--pp", "8"],
                              "deeper than the model's 4 blocks; use --pp 4 or fewer"),
    "batch not divisible by dp": ({}, ["plan", GPT, "--gpus", "4", *CPU, "--global-batch", "10", "--dp", "4"],
                                  "not divisible by --dp 4; use --global-batch 8 or 12"),
    "batch not divisible by dp x mbs": ({}, ["plan", GPT, "--gpus", "4", *CPU, "--global-batch", "12", "--dp", "2",
                                             "--micro-batch", "4"], "dp x micro-batch = 8; use --global-batch 8 or 16"),
    "fits no plan": ({}, ["plan", f"{ROOT / 'examples' / 'gpt.py'}:gpt3_175b", "--gpus", "1"],
                     "needs at least 37 GPUs of this kind"),
    "tp x pp x dp != gpus": ({}, ["plan", GPT, "--gpus", "8", *CPU, "--tp", "2", "--pp", "2", "--dp", "4"],
                             "--tp 2 x --pp 2 x --dp 4 = 16 does not equal the 8 GPUs"),
    "dp not dividing gpus": ({}, ["plan", GPT, "--gpus", "8", *CPU, "--dp", "3"], "does not divide the 8 GPUs"),
    "vpp without interleaved": ({}, ["plan", GPT, "--gpus", "8", *CPU, "--vpp", "2", "--schedule", "1f1b"],
                                "--vpp 2 needs --schedule interleaved"),
    "dp-shard not dividing dp": ({}, ["plan", GPT, "--gpus", "8", *CPU, "--dp", "4", "--dp-shard", "3", "--zero", "2"],
                                 "--dp-shard 3 does not divide --dp 4"),
    "dp-shard with ddp": ({}, ["plan", GPT, "--gpus", "8", *CPU, "--dp-shard", "2", "--zero", "0"],
                          "--zero 0 is DDP; use --zero 2 or 3"),
    "zero with dp 1": ({}, ["plan", GPT, "--gpus", "2", *CPU, "--dp", "1", "--zero", "3"], "--dp 1 has nothing to shard"),
    "zero 1": ({}, ["plan", GPT, "--gpus", "2", *CPU, "--zero", "1"], "invalid choice: 1 (choose from 0, 2, 3)"),
    "zero-bubble schedule": ({}, ["plan", GPT, "--gpus", "2", *CPU, "--schedule", "zbv"], "invalid choice: 'zbv'"),
    "micro-batch 0": ({}, ["plan", GPT, "--gpus", "2", *CPU, "--micro-batch", "0"], "0 must be at least 1"),
    "negative time limit": ({}, ["plan", GPT, "--gpus", "2", *CPU, "--time-limit", "-1"],
                            "--time-limit -1: give a positive number of seconds"),
    "bad compare layout": ({}, ["plan", GPT, "--gpus", "2", *CPU, "--compare", "tp3-xx"], "unknown part 'xx'"),
    "emit dir not empty": ({"out/mine.txt": "x"}, ["plan", GPT, "--gpus", "2", *CPU, "--emit", "{d}/out"],
                           "is not empty; choose another directory or pass --force"),
    "out file exists": ({"p.json": "x"}, ["plan", GPT, "--gpus", "2", *CPU, "--out", "{d}/p.json"], "exists"),
    "plan.json corrupted": ({"p.json": "{not json"}, ["show", "{d}/p.json"], "is not valid JSON (line 1)"),
    "plan.json future version": ({"p.json": json.dumps({"schema": 99})}, ["show", "{d}/p.json"],
                                 "schema 99 is newer than this planner's 2; upgrade planner"),
    "plan.json not an object": ({"p.json": "[1, 2]"}, ["show", "{d}/p.json"], "does not hold a JSON object"),
    "plan.json incomplete": ({"p.json": json.dumps({"schema": 1})}, ["show", "{d}/p.json"], "incomplete or corrupted"),
    "plan.json missing": ({}, ["show", "{d}/none.json"], "no plan file at"),
    "run dir without program": ({}, ["run", "{d}"], "holds no train.py; emit a plan there first"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case, tmp_path, capsys):
    files, argv, expected = CASES[case]
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    argv = [a.replace("{d}", str(tmp_path)) for a in argv]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("plan: error: ") and err.count("\n") == 1, err
    assert expected in err and "Traceback" not in err, err


def test_the_table_is_large_enough():
    assert len(CASES) >= 30
