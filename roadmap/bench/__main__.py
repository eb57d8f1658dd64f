"""``python -m roadmap.bench``: run the benchmarks, write their JSON and ``BENCHMARKS.md``."""

import sys

from roadmap.bench import main

if __name__ == "__main__":
    sys.exit(main())
