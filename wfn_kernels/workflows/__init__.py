"""Workflows on top of the library: the demo, bundled datasets and models, training, the ``wfn`` CLI.

- ``cli.py`` (``wfn``), ``fix_cli.py`` (``wfn fix`` / ``sweep`` / ``stats``), ``demo.py`` (``wfn demo``).
- ``pipeline.py``: one WFN run on a bundled dataset, with every output file; ``experiments.py``: the
  multi-seed runs behind bench/results; ``curve.py`` / ``curve_report.py``: the accuracy vs unique-weights
  trade-off curve over δ and seeds with the quantisation baselines (bench/results/curve).
- ``data.py`` (digits, Fashion-MNIST idx files), ``models.py`` (small-cnn, small-resnet), ``train.py``,
  ``plots.py``.

May import everything below it (nn, ops, format, fixing) and ``wfn_sim``. Nothing imports workflows
except the console scripts and tests.
"""
