"""The engine: `make_run(cfg, task, algo) -> run(key, hp)`, one compiled program for all n nodes.

`sim` (the tick function and the drivers), `state` (the `SimState` pytree), `local` (local
training), `flat` (a model as a `(K, F)` fragment array), `evaluation`, `rows`, `sizing` and
`run_checks` (host checks before a run), `memory` and `memory_scale` (the memory model),
`sharding` (the node axis over devices), `xla_options` (`jit`), `checkpoint`,
`checkpoint_errors` and `fingerprint` (save and resume long runs).
"""
