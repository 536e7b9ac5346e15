"""The README's "Client compatibility" table is MATRIX (client_matrix.py), which
the test_client_*.py modules check row by row."""

from __future__ import annotations

import re

from client_matrix import REPO, matrix_markdown


def test_readme_matrix_is_current():
    text = (REPO / "README.md").read_text()
    m = re.search(r"^## Client compatibility\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, ("README.md has no '## Client compatibility' section; add it with this table "
               "(generated from MATRIX in integration/client_matrix.py):\n\n" + matrix_markdown())
    table = "\n".join(line for line in m.group(1).splitlines() if line.startswith("|"))
    assert table == matrix_markdown(), ("README.md's client table differs from MATRIX in "
                                        "integration/client_matrix.py; expected:\n\n" + matrix_markdown())
