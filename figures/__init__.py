"""Reproducible figures: the paper's synthetic figures and our own, with cached data.

- :mod:`figures.registry`: the figures (name -> runs, assemble, draw; quick and full settings).
- :mod:`figures.linear`: the paper's linear sweeps (vary-d, vary-T, vary-N, vary-n, vary-k).
- :mod:`figures.shallow`: the paper's shallow-network sweeps (torch, imported only when run).
- :mod:`figures.ours`: spectrum, sr-floor-vs-T, rate, phase, landscape-T2.
- :mod:`figures.generate`: compute (process pool, resumable) or load, then draw.
- :mod:`figures.cache`: cache keys and atomic data files; :mod:`figures.plot`: the common style.

Command line: ``loraml figures [NAME ...] [--quick] [--out DIR] [--jobs J]``.
"""
