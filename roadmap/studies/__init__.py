"""Studies built on the ladder, each a command writing where it is told: the cpu protocol
(grid, selection rule, robustness sweeps: :mod:`~roadmap.studies.protocol`), the view across
protocols (:mod:`~roadmap.studies.robustness`) and the training-length check
(:mod:`~roadmap.studies.length`). Only ``protocol select --write`` writes into the project
(``conf/protocol/`` and ``experiments/``): that is its documented product."""
