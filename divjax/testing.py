"""Conformance checks any algorithm must pass: the safety net of the built-in ones, for yours.

    from divjax.testing import check_algorithm
    report = check_algorithm("my_pkg.my_mod:make_algo")   # or a factory, or a built-in name
    # raises ConformanceError naming the first broken property; returns {check: "ok" | reason}

Every built-in algorithm is run through these checks in tests/test_conformance.py, so the checks
cannot rot. Each runs the engine on a tiny synthetic config (`conformance_config`, a few
compilations of n = 6 nodes) and checks one property:

- `identical_models_stay_identical`: with every node at the same model and no training (lr 0),
  whatever is exchanged and averaged leaves every model at the initial one (to float rounding
  of the averages), and something was delivered (else the check proves nothing);
- `nothing_read_before_arrival`: with a latency longer than the run no message can arrive, so
  every model must equal the local-only run's bit for bit (same key: same initial model, same
  mini-batches), and nothing is counted delivered (asynchronous algorithms; a synchronous round
  waits for its messages by construction: the reference simulators check those);
- `counters_balance`: messages that left or will leave a link equal those delivered, lost or
  still travelling: sum(sent + queued to leave) == sum(delivered + lost + in flight to arrive);
- `same_key_same_bits`: the same key gives bit-identical models and counters; another differs;
- `chunking_invariant`: ending the iterations of finishing nodes in chunks of one
  (`iteration_chunk=1`) gives the same counters exactly and the models to float rounding;
- `memory_accounted`: the memory model's state parts are the bytes of the state the engine
  builds with this algorithm (so `--dry-run` and the memory check see its state).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from divjax.algorithms import Algorithm, make_algorithm
from divjax.algorithms.local_only import make_local_only
from divjax.config import SimConfig, default_hparams
from divjax.engine.xla_options import jit


class ConformanceError(AssertionError):
    """An algorithm broke a property every divjax algorithm keeps: which, and how."""


def conformance_config(**changes) -> SimConfig:
    """The tiny config of the checks: 6 nodes, 2 fragments, stragglers, 1 simulated second."""
    base = SimConfig(task="synthetic", n_nodes=6, n_fragments=2, fanout=2, local_steps=2,
                     batch_size=4, tick_s=0.01, duration_s=1.0, eval_every_s=0.5,
                     compute_s=0.1, n_stragglers=2, straggler_mbps=(0.05,), fast_mbps=0.5,
                     lr=0.05)
    return base.replace(**changes)


def _factory(algorithm) -> tuple[Callable[[SimConfig], Algorithm], str | None]:
    """(factory, name for cfg.algorithm or None) of a spec, a built-in name or a factory."""
    if callable(algorithm):
        return algorithm, None
    return (lambda cfg: make_algorithm(cfg.replace(algorithm=algorithm))), algorithm


class Runner:
    """Builds and jits each run of the checks once (one per config and sizing), so the checks
    share compilations: a run built for `hp` serves any HParams of the same sizes."""

    def __init__(self, factory: Callable[[SimConfig], Algorithm], cfg: SimConfig):
        self.factory, self.cfg, self._runs = factory, cfg, {}

    def run(self, hp=None, key: int = 0, sized_for: str = "default", factory=None, **changes):
        """(final state, metrics) of cfg.replace(**changes) under `hp` (default_hparams)."""
        from divjax.engine.sim import make_run

        factory = factory or self.factory
        cfg = self.cfg.replace(**changes)
        hp = default_hparams(cfg) if hp is None else hp
        ident = (id(factory), sized_for, tuple(sorted(changes.items())))
        if ident not in self._runs:
            self._runs[ident] = jit(make_run(cfg, None, factory(cfg), hp))
        return self._runs[ident](jax.random.key(key), hp)


def _fail(check: str, why: str):
    raise ConformanceError(f"{check}: {why}")


def identical_models_stay_identical(runs: Runner) -> str:
    hp = default_hparams(runs.cfg).replace(lr=np.float32(0.0))
    state, _ = runs.run(hp)
    params = np.asarray(state.params)
    if not np.allclose(params, params[:1], rtol=1e-6, atol=1e-7):
        worst = float(np.max(np.abs(params - params[:1])))
        _fail("identical_models_stay_identical", f"with every node at one model and lr 0, the "
              f"models differ after the run (largest difference {worst:.3g})")
    if int(np.sum(state.counters.delivered)) == 0:
        return "vacuous: nothing was delivered"
    return "ok"


def nothing_read_before_arrival(runs: Runner) -> str:
    cfg = runs.cfg
    if runs.factory(cfg).synchronous:
        return "skipped: synchronous rounds wait for their messages (reference tests cover it)"
    hp = default_hparams(cfg)
    late = hp.replace(latency_s=np.full(cfg.n_nodes, 2.0 * cfg.duration_s, np.float32))
    state, _ = runs.run(late, sized_for="late")
    alone, _ = runs.run(hp, factory=make_local_only)
    got = int(np.sum(state.counters.delivered))
    if got:
        _fail("nothing_read_before_arrival", f"{got} message(s) counted delivered although the "
              f"latency ({2 * cfg.duration_s:g} s) is longer than the run")
    if not np.array_equal(np.asarray(state.params), np.asarray(alone.params)):
        _fail("nothing_read_before_arrival", "no message could arrive within the run, yet the "
              "models differ from local-only training with the same key: something was read "
              "before its arrival tick (or the algorithm changes models without messages)")
    return "ok"


def _balance(c) -> tuple[int, int]:
    out = int(np.sum(c.sent)) + int(np.sum(c.ring_sent))
    came = (int(np.sum(c.delivered)) + int(np.sum(c.lost)) + int(np.sum(c.ring_delivered))
            + int(np.sum(c.ring_lost)))
    return out, came


def counters_balance(runs: Runner) -> str:
    state, _ = runs.run()
    out, came = _balance(state.counters)
    if out != came:
        _fail("counters_balance", f"{out} message(s) sent or leaving, but {came} delivered, lost "
              f"or arriving: a message was counted on one side only")
    return "ok" if out else "vacuous: nothing was sent"


def same_key_same_bits(runs: Runner) -> str:
    a, _ = runs.run(key=3)
    b, _ = runs.run(key=3)
    c, _ = runs.run(key=4)
    for name, x, y in (("params", a.params, b.params), ("sent", a.counters.sent,
                                                         b.counters.sent),
                       ("delivered", a.counters.delivered, b.counters.delivered)):
        if not np.array_equal(np.asarray(x), np.asarray(y)):
            _fail("same_key_same_bits", f"two runs with the same key differ in {name}")
    if np.array_equal(np.asarray(a.params), np.asarray(c.params)):
        _fail("same_key_same_bits", "runs with different keys give identical models")
    return "ok"


def chunking_invariant(runs: Runner) -> str:
    a, _ = runs.run()                       # the checks' config: iteration_chunk 0
    b, _ = runs.run(iteration_chunk=1)
    for name in a.counters._fields:
        x, y = np.asarray(getattr(a.counters, name)), np.asarray(getattr(b.counters, name))
        if not np.array_equal(x, y):
            _fail("chunking_invariant", f"counter {name} differs between iteration_chunk 0 "
                  f"and 1 ({int(x.sum())} against {int(y.sum())})")
    if not np.allclose(np.asarray(a.params), np.asarray(b.params), rtol=1e-5, atol=1e-6):
        _fail("chunking_invariant", "models differ beyond float rounding between "
              "iteration_chunk 0 and 1")
    return "ok"


def memory_accounted(runs: Runner) -> str:
    from divjax.engine import memory
    from divjax.engine.sim import make_engine

    algo = runs.factory(runs.cfg)
    engine = make_engine(runs.cfg, None, algo)
    state = jax.eval_shape(engine.init, jax.random.key(0), default_hparams(engine.cfg))
    m = memory.memory_model(engine.cfg, engine.layout, algo=algo)
    modelled = sum(m["parts"][k] for k in memory.STATE_PARTS)
    if modelled != memory.state_bytes(state):
        _fail("memory_accounted", f"the memory model counts {modelled} bytes of state, the "
              f"engine builds {memory.state_bytes(state)}")
    return "ok"


CHECKS = (identical_models_stay_identical, nothing_read_before_arrival, counters_balance,
          same_key_same_bits, chunking_invariant, memory_accounted)


def check_algorithm(algorithm, cfg: SimConfig | None = None, checks=CHECKS) -> dict:
    """Run every conformance check on `algorithm` (a built-in name, an import-path spec
    `MODULE:ATTR`, or a factory cfg -> Algorithm). Returns {check name: "ok" or why it was
    skipped}; raises ConformanceError at the first property broken."""
    factory, name = _factory(algorithm)
    cfg = conformance_config() if cfg is None else cfg
    if name is not None:
        cfg = cfg.replace(algorithm=name)
    runs = Runner(factory, cfg.replace(same_init=True, iteration_chunk=0))
    return {check.__name__: check(runs) for check in checks}
