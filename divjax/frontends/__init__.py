"""Front ends: what turns runs into experiments and files.

`cli` (`divjax run`, the console script), `compare` (`divjax compare`), `sweep` with `sweep_grid`,
`sweep_run`, `sweep_store`, `sweep_outputs` and `sweep_cli` (vmapped sweeps and `divjax sweep`),
`report` and `plotting` (outputs and `divjax plot`), `flags` and `presets` (what every
subcommand shares), `outdir` (output folders that never lose anything), `stats` (intervals and
verdicts of seeded comparisons).
"""
