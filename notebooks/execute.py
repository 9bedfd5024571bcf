"""Executes notebooks headless (nbclient) and fails on the first error: python execute.py NB..."""
import sys

import nbformat
from nbclient import NotebookClient

for path in sys.argv[1:]:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": "."}}).execute()
    print(f"executed {path}: {sum(c.cell_type == 'code' for c in nb.cells)} code cells, no errors")
