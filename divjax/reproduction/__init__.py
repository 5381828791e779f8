"""The DivShare reproduction as a seeded, per-cell, resumable grid (issues 19, 31).

A cell is (task, regime, algorithm, seed). Each cell writes one JSON file,
`<out>/cells/<task>/<regime>/<algorithm>-seed<k>.json` (its config, the curve of every metric
against simulated time, the message counters, wall time, the git commit), and is skipped when
that file exists, so the grid fills up over several invocations. The cells of one algorithm
and one shape run as one vmapped program (`divjax.frontends.sweep.run_points`: seeds x regime points that
only change HParams, such as the share of stragglers or the learning rate).
`docs/reproduction.md` and its figures are regenerated from whatever cells exist; missing
cells are listed there.

Modules: `configs` (settings, targets, base configs), `grid` (parts as groups of cells),
`tuning` (the tune, pilot and tuned parts, the rate choice rule), `cells` (running a group,
writing and reading cells), `analysis`, `plateaus` and `cifar_map` (every figure from the
cells), `figures`, `text`, `doc` and `doc_*` (the document, one function per section), `cli`
(the command line of `scripts/reproduction_grid.py`). Statistics: `divjax.frontends.stats`.
"""
