"""Reproducible figures: the paper's synthetic figures and our own, with cached data.

- :mod:`loraml.figures.spec`: what a figure is (:class:`~loraml.figures.spec.FigureSpec`: runs,
  assemble, draw; quick and full settings) and its seeded runs.
- :mod:`loraml.figures.registry`: the figures, name -> spec.
- :mod:`loraml.figures.linear`: the paper's linear sweeps (vary-d, vary-T, vary-N, vary-n, vary-k).
- :mod:`loraml.figures.shallow`: the paper's shallow-network sweeps (torch, imported only when run).
- :mod:`loraml.figures.ours`: spectrum, sr-floor-vs-T, rate, phase, landscape-T2.
- :mod:`loraml.figures.generate`: compute (process pool, resumable) or load, then draw.
- :mod:`loraml.figures.cache`: cache keys and atomic data files; :mod:`loraml.figures.plot`: the
  common style.

Command line: ``loraml figures [NAME ...] [--quick] [--out DIR] [--jobs J]``.
"""
