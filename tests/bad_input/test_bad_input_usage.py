"""The bad-input table: every malformed input ends in exit 2 and one message (what, where, how to fix).

Rows live in one module per area (``test_bad_input_<area>.py``) so each reads as a table.
"""

from __future__ import annotations

import pytest

from helpers import BadInput, check_bad_input

ROWS = [
    BadInput("unknown plugin", lambda tmp: ["run", "--plugin", "medicall", "--output", str(tmp / "o")],
             ("medicall", "medical")),
    BadInput("unknown strategy", lambda tmp: ["run", "--plugin", "medical", "--strategy", "fintune",
                                              "--output", str(tmp / "o")], ("fintune", "finetune")),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(tlapp, tmp_path, row):
    check_bad_input(tlapp, tmp_path, row)
