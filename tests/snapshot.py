"""The committed snapshot of every step's parameters and GFLOPs (pycls-style drift guard).

    python -m tests.snapshot     # or: make snapshot  -- rewrite it after a deliberate change
"""

import json
from pathlib import Path

from roadmap.describe import describe
from roadmap.ladder import LADDERS

PATH = Path(__file__).parent / "snapshots" / "complexity.json"


def measure(ladder: str) -> dict[str, dict]:
    return {r["step"]: {"params": r["params"], "gflops": r["gflops"]} for r in describe(ladder)}


def main() -> None:
    data = {ladder: measure(ladder) for ladder in LADDERS}
    PATH.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {PATH}")


if __name__ == "__main__":
    main()
