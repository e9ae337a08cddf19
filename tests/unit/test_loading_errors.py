"""Each way a model file can be wrong gives exit code 2 and one line that says what to change."""
from __future__ import annotations

import pytest

from cli import main

GOOD_BATCH = "import torch\ndef batch(n): return torch.zeros(n, 4), torch.zeros(n, dtype=torch.long)\n"
CASES = {
    "missing file": (None, "no such model file"),
    "syntax error": ("import torch\ndef model(:\n    pass\n", ":2: syntax error"),
    "import raises": ("import torch\nraise RuntimeError('boom')\n", ":2: importing the model file raised RuntimeError: boom"),
    "no factory": (GOOD_BATCH + "def other(): pass\n", "defines no factory 'model()'"),
    "factory raises": (GOOD_BATCH + "def model():\n    raise ValueError('bad size')\n", ":4: model() raised ValueError: bad size"),
    "factory returns non-module": (GOOD_BATCH + "def model(): return 3\n", "returned int, not a torch.nn.Module"),
    "no batch": ("import torch\ndef model(): return torch.nn.Linear(4, 4)\n", "defines no batch(batch_size)"),
    "batch wrong type": ("import torch\ndef model(): return torch.nn.Linear(4, 4)\ndef batch(n): return 5\n",
                         "must return a pair (inputs, targets)"),
    "batch raises": ("import torch\ndef model(): return torch.nn.Linear(4, 4)\ndef batch(n): return 1/0\n",
                     "batch(1) raised ZeroDivisionError"),
    "batch wrong size": ("import torch\ndef model(): return torch.nn.Linear(4, 4)\n"
                         "def batch(n): return torch.zeros(n + 1, 4), torch.zeros(n + 1)\n", "first dimension"),
    "bad TP_PLAN": (GOOD_BATCH + "TP_PLAN = {'a': 'diagonal'}\ndef model(): return torch.nn.Linear(4, 4)\n",
                    "TP_PLAN must map"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_model_file(tmp_path, capsys, case):
    text, expected = CASES[case]
    path = tmp_path / "model.py"
    if text is not None:
        path.write_text(text)
    assert main(["profile", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_named_factory_missing_lists_the_functions(tmp_path, capsys):
    path = tmp_path / "m.py"
    path.write_text(GOOD_BATCH + "def small(): pass\ndef large(): pass\n")
    assert main(["profile", f"{path}:huge"]) == 2
    assert "functions in the file: large, small" in capsys.readouterr().err


def test_bad_micro_batch_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["profile", "examples/gpt.py:tiny", "--micro-batch", "0"])
    assert e.value.code == 2
