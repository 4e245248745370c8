"""`choice` reports acc and acc_norm side by side: the matrix shows the one `length_norm` names, and the other
is kept per task and row in results.json (`also`) and printed by `lifelong show`."""

from __future__ import annotations

import json
from io import StringIO

import numpy as np
from rich.console import Console

from lifelong.eval.results import Results
from lifelong.report.table import print_run


def test_the_other_accuracy_is_kept_beside_the_matrix_and_shown(tmp_path):
    tasks = [
        {
            "name": "t",
            "metric": "accuracy",
            "higher_is_better": True,
            "stage": 0,
            "scorer": "choice",
            "n": 4,
            "also": "acc_norm",
        }
    ]
    res = Results("r", ["baseline", "t"], tasks)
    res.set_cell(0, 0, np.array([[1, 0], [0, 0], [1, 1], [0, 1]], dtype=float))  # acc 50, acc_norm 50
    res.set_cell(1, 0, np.array([[1, 1], [1, 1], [1, 0], [0, 0]], dtype=float))  # acc 75, acc_norm 50
    assert res.matrix == [[50.0], [75.0]]
    res.save(tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["also"]["t"] == {"metric": "acc_norm", "rows": {"baseline": 50.0, "t": 50.0}}
    (tmp_path / "config.yaml").write_text("name: r\n")
    out = StringIO()
    print_run(tmp_path, Console(file=out, width=100))
    assert "t: acc_norm (beside the matrix's score): baseline 50.00, t 50.00" in out.getvalue()
