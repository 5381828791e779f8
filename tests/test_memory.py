"""The memory model against the state the engine actually builds, and largest_n."""

import jax
import numpy as np
import pytest
from conftest import tiny_config

import divjax
from divjax.engine import memory, memory_scale
from divjax.config import default_hparams
from divjax.engine.sim import make_engine
from divjax.engine.sizing import memory_estimate


@pytest.mark.parametrize("delivery", ["receiver_iteration", "arrival_tick"])
@pytest.mark.parametrize("momentum", [False, True])
def test_memory_model__covers_the_state_init_builds(delivery, momentum):
    cfg = tiny_config(n_nodes=16, delivery=delivery, momentum_buffer=momentum)
    engine = make_engine(cfg)
    state = jax.eval_shape(engine.init, jax.random.key(0), default_hparams(engine.cfg))
    m = memory.memory_model(engine.cfg, engine.layout)
    p = m["parts"]
    state_part = p["params"] + p["optimizer"] + p["ring"] + p["pending"] + p["counters"]
    exact = memory.state_bytes(state)
    assert exact - 64 <= state_part <= exact * 1.05 + 1024  # the state, up to a few scalars
    assert m["total"] == sum(p.values())
    assert m["per_node"]["params"] == engine.layout.K * engine.layout.F * 4


def test_memory_model__sim_estimate_uses_it():
    engine = make_engine(tiny_config())
    est = memory_estimate(engine.cfg, engine.layout, engine.cfg.ring_ticks)
    assert est["total"] == sum(v for k, v in est.items() if k != "total")
    assert est["params"] == 5 * engine.layout.K * engine.layout.F * 4


def test_task_data_bytes__counts_closed_over_arrays():
    engine = make_engine(tiny_config(n_nodes=8))
    b = memory.task_data_bytes(engine.task)
    x_bytes = 8 * 64 * 16 * 4  # the synthetic task's training inputs alone
    assert b >= x_bytes


def test_largest_n__is_the_boundary_of_the_model():
    cfg = tiny_config()
    D, budget = 200_000, 2 * 2**30
    n = memory_scale.largest_n(cfg, D, budget)
    fits = lambda k: memory.memory_model(cfg.replace(n_nodes=k, train_capacity=0), D,
                                         available=budget)["total"] <= budget  # noqa: E731
    assert n > 2 and fits(n) and not fits(n + 1)
    assert memory_scale.largest_n(cfg, D, budget // 2) < n
    assert memory_scale.largest_n(cfg, D, 10) == 0


def test_compiled_memory__reports_buffers():
    f = jax.jit(lambda x: x * 2).lower(np.zeros(1000, np.float32)).compile()
    m = memory.compiled_memory(f)
    if m:  # backends without the analysis return {}
        assert m["argument"] >= 4000 and m["peak_estimate"] > 0


def test_drivers__refuse_a_compiled_step_that_does_not_fit(monkeypatch):
    """The state estimate passes, but XLA's buffers for the compiled step (temporaries
    included) exceed the device: the drivers and the sweep refuse before running, naming the
    size and the fixes, instead of running out of memory."""
    from divjax.engine import sizing
    from divjax.config import ConfigError
    from divjax.engine.sim import simulate
    from divjax.frontends.sweep import sweep

    cfg = tiny_config(duration_s=0.5)
    engine = make_engine(cfg)
    hp = default_hparams(cfg)
    state, _ = simulate(engine, jax.random.key(0), hp)        # fits: runs
    compiled = sizing.compile_checked(divjax.jit(engine.advance), state, hp, cfg=engine.cfg)
    if not memory.compiled_memory(compiled):
        pytest.skip("this backend reports no buffer sizes")
    # a device with less memory than the compiled step's buffers
    monkeypatch.setattr(sizing, "available_memory_bytes", lambda: 2**20)
    monkeypatch.setattr(sizing, "compiled_memory", lambda c: {"peak_estimate": 2**30})
    with pytest.raises(ConfigError, match=r"compiled program for one eval interval needs "
                                          r"about 1.00 GiB.*--n-nodes"):
        simulate(engine, jax.random.key(0), hp)
    with pytest.raises(ConfigError, match=r"sweep chunk of 1 point.*--chunk-size"):
        sweep(cfg, {"lr": [0.1]}, seeds=1, chunk_size=1)
