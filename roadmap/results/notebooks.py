"""Execute an analysis notebook (a jupytext percent script) on a results table.

    python -m roadmap.results.notebooks analysis/ladder.py results/resnet50-cpu/results.csv \
        [--out nb.ipynb]

The ``parameters`` cell's ``RESULTS`` is replaced (as papermill does) and every cell runs in a
fresh kernel; an error in any cell fails the run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient


def execute(notebook: str | Path, results: str | Path, out: str | Path | None = None,
            timeout: int = 300) -> nbformat.NotebookNode:
    notebook = Path(notebook)
    nb = jupytext.read(notebook)
    params = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    if not params:
        raise ValueError(f"{notebook} has no cell tagged 'parameters'")
    injected = nbformat.v4.new_code_cell(f"RESULTS = {str(Path(results).resolve())!r}")
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(params[0] + 1, injected)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(notebook.parent)}}).execute()
    if out:
        nbformat.write(nb, str(out))
    return nb


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="execute an analysis notebook on a table")
    parser.add_argument("notebook")
    parser.add_argument("results")
    parser.add_argument("--out", help="write the executed notebook (.ipynb) here (default: "
                        "beside the table, named after the notebook)")
    args = parser.parse_args(argv)
    args.out = args.out or str(Path(args.results).parent / (Path(args.notebook).stem + ".ipynb"))
    execute(args.notebook, args.results, args.out)
    print(f"executed {args.notebook} on {args.results}" + (f" -> {args.out}" if args.out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
