"""Results: tables from run directories, their intervals, figures and notebooks.

- ``collect``: ``python -m roadmap.results.collect <sweep dir>`` -> ``results.csv``,
  ``results.md``, ``runs.csv`` (one row per step and variant; model flags as ``model.*``
  columns);
- ``stats``: the 95% intervals (of a mean, a difference of means, a ratio of times);
- ``text``: how numbers read in every table (mean ± std, change ± interval, made by);
- ``plots``: ``python -m roadmap.results.plots <results.csv>`` -> the figures;
- ``notebooks``: execute an analysis notebook on a table.
"""
