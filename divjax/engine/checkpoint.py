"""Checkpoints of long runs: save the full simulation state, resume it bit-identically.

A checkpoint holds everything `simulate` needs to continue: the `SimState` (every node's model and
optimizer state, the algorithm state, the ring buffer of messages in flight, the counters, the
clock `t` and the simulation key `k_sim`) and the metrics recorded so far. The typed PRNG key is
stored as `jax.random.key_data` (uint32) and wrapped back with `jax.random.wrap_key_data`, so the
resumed run draws exactly the same numbers. Storage is orbax-checkpoint (synchronous saves; each
checkpoint is a step directory named by the tick it was taken at).

Layout of a run directory that checkpoints:

    RUN_DIR/run.json          the resolved SimConfig, the HParams and the seed (enough to rebuild)
    RUN_DIR/checkpoints/<t>/  orbax steps: items "state", "history" and "spec" (the fingerprint:
                              resolved config, HParams digests, key data, fragment layout,
                              XLA options; `divjax.engine.fingerprint`; checked on restore and save:
                              runs never mix their checkpoints nor resume other bits)

`drive(...)` is the host loop (the same jitted `engine.advance` with donation as
`divjax.engine.sim.simulate`, hence bit-identical to it and to `make_run` under `divjax.jit`) that
saves every `every_s` simulated seconds and on Ctrl-C, then re-raises. Host-side only.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from divjax.engine.checkpoint_errors import CheckpointWriteError, write_errors_as_one  # noqa: F401
from divjax.config import ConfigError, HParams, SimConfig, check_hparams
from divjax.engine.fingerprint import fingerprint, fingerprint_mismatch  # noqa: F401 (API)
from divjax.engine.sim import Engine, check_state
from divjax.engine.sizing import compile_checked
from divjax.engine.state import SimState
from divjax.engine.xla_options import jit, program_options

CHECKPOINT_DIR = "checkpoints"
RUN_SPEC = "run.json"
SPEC_ITEM = "spec"   # the fingerprint item of every checkpoint (JSON)


# ----------------------------------------------------------------------------- run spec


def save_run_spec(run_dir: Path, cfg: SimConfig, hp: HParams, seed: int, extra: dict | None = None):
    """Write RUN_DIR/run.json: the resolved config, the HParams and the seed of the run."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = {"config": dataclasses.asdict(cfg),
            "hparams": {f.name: np.asarray(getattr(hp, f.name)).tolist()
                        for f in dataclasses.fields(HParams)},
            "seed": int(seed), **(extra or {})}
    (run_dir / RUN_SPEC).write_text(json.dumps(spec, indent=1))


def load_run_spec(run_dir: Path) -> tuple[SimConfig, HParams, int, dict]:
    """Read RUN_DIR/run.json back: (cfg, hp, seed, the whole spec).

    A missing directory, a directory that is not a checkpointed run, or an unreadable run.json
    is a ConfigError that says what to do instead."""
    run_dir = Path(run_dir)
    path = run_dir / RUN_SPEC
    if not run_dir.is_dir():
        raise ConfigError(f"--resume {run_dir}: no such directory; give the --out directory of a "
                          "run started with --checkpoint-every SECONDS")
    if not path.is_file():
        raise ConfigError(f"--resume {run_dir}: it holds no {RUN_SPEC}, so it is not a "
                          "checkpointed run; only runs started with --checkpoint-every SECONDS "
                          "can be resumed")
    try:
        spec = json.loads(path.read_text())
        fields = {f.name: f for f in dataclasses.fields(SimConfig)}
        values = {}
        for k, v in spec["config"].items():
            if k in fields:
                values[k] = tuple(v) if isinstance(fields[k].default, tuple) else v
        # float32 -> JSON (float64 repr, exact) -> float32 is lossless
        hp = HParams(**{k: jnp.asarray(np.asarray(v, np.float32))
                        for k, v in spec["hparams"].items()})
        seed = int(spec["seed"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{path} is unreadable or incomplete ({type(e).__name__}: {e}); it "
                          "cannot be resumed: start a new run") from e
    cfg = SimConfig(**values)
    check_hparams(cfg, hp, where=f"{path}: hparams")
    return cfg, hp, seed, spec


# ----------------------------------------------------------------------------- state <-> storage


def _to_storable(state: SimState) -> dict:
    """A flat dict {"leaf_00012": array} of the state's non-empty leaves (orbax refuses empty
    arrays); the typed key becomes its uint32 key data."""
    leaves = jax.tree.leaves(state.replace(k_sim=jax.random.key_data(state.k_sim)))
    return {f"leaf_{i:05d}": x for i, x in enumerate(leaves) if np.prod(np.shape(x)) > 0}


def _from_storable(flat: dict, template: SimState, impl) -> SimState:
    """Inverse of `_to_storable`, given the abstract state (`jax.eval_shape(engine.init, ...)`)."""
    shaped = template.replace(k_sim=jax.eval_shape(jax.random.key_data, template.k_sim))
    leaves, treedef = jax.tree.flatten(shaped)
    out = []
    for i, x in enumerate(leaves):
        name = f"leaf_{i:05d}"
        if name in flat:
            got = jnp.asarray(np.asarray(flat[name]))   # uncommitted, like init's output
            if got.shape != x.shape or got.dtype != x.dtype:
                raise ConfigError(f"checkpoint leaf {i} has {got.shape} {got.dtype}, the engine "
                                  f"expects {x.shape} {x.dtype}: it was saved by another "
                                  f"config; resume it with its own run.json (--resume RUN_DIR)")
            out.append(got)
        else:
            out.append(jnp.zeros(x.shape, x.dtype))
    state = jax.tree.unflatten(treedef, out)
    return state.replace(k_sim=jax.random.wrap_key_data(state.k_sim, impl=impl))


def _manager(run_dir: Path, max_to_keep: int | None = 2):
    import orbax.checkpoint as ocp

    opts = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=False,
                                        create=True)
    return ocp.CheckpointManager(Path(run_dir).absolute() / CHECKPOINT_DIR, options=opts)


def _saved_fingerprint(mgr, run_dir: Path, step: int) -> dict | None:
    """The fingerprint stored with checkpoint `step`; None for checkpoints that predate them."""
    import orbax.checkpoint as ocp

    if not (Path(run_dir).absolute() / CHECKPOINT_DIR / str(step) / SPEC_ITEM).is_dir():
        return None
    try:
        return mgr.restore(step, args=ocp.args.Composite(
            **{SPEC_ITEM: ocp.args.JsonRestore()}))[SPEC_ITEM]
    except Exception:  # noqa: BLE001 - an unreadable fingerprint: the step is checked on restore
        return None


def _another_run(run_dir: Path, step: int, diff: str) -> ConfigError:
    return ConfigError(
        f"checkpoint step {step} in {Path(run_dir) / CHECKPOINT_DIR} belongs to another run "
        f"({diff}): resume that run with `divjax run --resume {run_dir}` (its own run.json), "
        f"or write this one into a new --out (or pass --overwrite to replace the old run)")


def check_checkpoints_belong(run_dir: Path, fp: dict) -> None:
    """ConfigError if RUN_DIR already holds checkpoints of another run (compared with `fp`)."""
    if not (Path(run_dir) / CHECKPOINT_DIR).is_dir():
        return
    mgr = _manager(run_dir, None)
    try:
        for step in mgr.all_steps():
            saved = _saved_fingerprint(mgr, run_dir, step)
            diff = fingerprint_mismatch(saved, fp) if saved is not None else None
            if diff:
                raise _another_run(run_dir, step, diff)
    finally:
        mgr.close()


def save(run_dir: Path, state: SimState, history: list[dict], max_to_keep: int | None = 2,
         fp: dict | None = None) -> int:
    """Save `state` and the per-chunk metrics so far; returns the step (the tick `t`).

    `fp` (`fingerprint(...)`) is stored with the checkpoint; a checkpoint of another run at
    the same step is a ConfigError, never silently kept."""
    import orbax.checkpoint as ocp

    step = int(jax.device_get(state.t))
    stacked = _stack(history)
    hist = {"chunks_done": np.int32(len(history)), "metrics": stacked} if history else \
        {"chunks_done": np.int32(0)}
    mgr = _manager(run_dir, max_to_keep)
    try:
        if step in mgr.all_steps():   # the same tick again (e.g. Ctrl-C right after a save)
            saved = _saved_fingerprint(mgr, run_dir, step) if fp is not None else None
            diff = fingerprint_mismatch(saved, fp) if saved is not None else None
            if diff:
                raise _another_run(run_dir, step, diff)
            return step
        items = {"state": ocp.args.StandardSave(_to_storable(state)),
                 "history": ocp.args.StandardSave(hist)}
        if fp is not None:
            items[SPEC_ITEM] = ocp.args.JsonSave(fp)
        with write_errors_as_one(run_dir, step, mgr, CHECKPOINT_DIR):
            mgr.save(step, args=ocp.args.Composite(**items))
            mgr.wait_until_finished()
    finally:
        with write_errors_as_one(run_dir, step, mgr, CHECKPOINT_DIR):
            mgr.close()
    return step


def latest_step(run_dir: Path) -> int | None:
    path = Path(run_dir) / CHECKPOINT_DIR
    if not path.exists():
        return None
    mgr = _manager(run_dir, None)
    step = mgr.latest_step()
    mgr.close()
    return step


def restore(run_dir: Path, engine: Engine, hp: HParams, step: int | None = None,
            key: jax.Array | None = None):
    """Load a checkpoint of a run built by `engine`: (state, history as a list of chunk metrics).

    `key` gives the PRNG implementation of the run's key (default: jax.random.key's) and, when
    given, is checked against the checkpoint's fingerprint like the config and the HParams: a
    checkpoint of another run is a ConfigError naming what differs. Without `step`, the newest
    readable checkpoint: an unreadable one (truncated, half-copied) is reported on stderr,
    removed, and the previous kept step restored."""
    import orbax.checkpoint as ocp

    check_hparams(engine.cfg, hp)
    fp = fingerprint(engine.cfg, hp, key, program_options(engine.advance))
    key = jax.random.key(0) if key is None else key
    impl = jax.random.key_impl(key)
    template = jax.eval_shape(engine.init, key, hp)
    abstract = jax.eval_shape(_to_storable, template)
    where = Path(run_dir) / CHECKPOINT_DIR
    if not where.is_dir():
        raise ConfigError(f"no checkpoint under {where}: the run stopped before its first "
                          f"checkpoint; start it again (a new --out, or --overwrite)")
    mgr = _manager(run_dir, None)
    steps = sorted(mgr.all_steps(), reverse=True) if step is None else [step]
    if not steps:
        mgr.close()
        raise ConfigError(f"no checkpoint under {where}: the run stopped before its first "
                          f"checkpoint; start it again (a new --out, or --overwrite)")
    failed = []
    try:
        for s in steps:
            saved = _saved_fingerprint(mgr, run_dir, s)
            diff = fingerprint_mismatch(saved, fp) if saved is not None else None
            if diff:
                raise _another_run(run_dir, s, diff)
            try:
                got = mgr.restore(s, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract),
                    history=ocp.args.StandardRestore()))
                state = _from_storable(got["state"], template, impl)
                hist = got["history"]
                C = int(hist["chunks_done"])
                history = [jax.tree.map(lambda x, i=i: np.asarray(x[i]), hist["metrics"])
                           for i in range(C)] if C else []
                if int(state.t) != C * engine.cfg.eval_every:
                    raise ValueError(f"state tick {int(state.t)} does not match {C} recorded "
                                     f"eval intervals of {engine.cfg.eval_every} ticks")
            except ConfigError:
                raise
            except Exception as e:  # noqa: BLE001 - any storage failure: try the step before
                failed.append(s)
                print(f"divjax: checkpoint step {s} in {where} is unreadable "
                      f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})",
                      file=sys.stderr)
                continue
            if failed:
                for bad in failed:   # else a later save at that tick would keep the broken one
                    shutil.rmtree(where / str(bad), ignore_errors=True)
                print(f"divjax: falling back to checkpoint step {s} (simulated t="
                      f"{s * engine.cfg.tick_s:g}s), the newest readable one; removed the "
                      f"unreadable step(s) {failed}", file=sys.stderr)
            return state, history
    finally:
        mgr.close()
    raise ConfigError(f"no readable checkpoint under {where} (tried steps {failed}): the files "
                      f"are truncated or corrupt; start the run again (a new --out, or "
                      f"--overwrite)")


def _stack(history: list[dict]) -> dict:
    return jax.tree.map(lambda *xs: np.stack(xs), *history) if history else {}


# ----------------------------------------------------------------------------- the driver


def drive(engine: Engine, key: jax.Array, hp: HParams, run_dir: Path | None = None,
          every_s: float | None = None, progress: Callable | None = None,
          state: SimState | None = None, history: list[dict] | None = None,
          stop_chunk: int | None = None, max_to_keep: int | None = 2):
    """Run (or continue) a simulation, checkpointing into `run_dir`.

    Saves after every eval interval that crosses a multiple of `every_s` simulated seconds, at
    the end, and when interrupted (KeyboardInterrupt, e.g. Ctrl-C or raised by `progress`), in
    which case it re-raises after saving. A checkpoint that cannot be written (full disk, no
    permission) is one line on stderr; checkpointing stops and the run goes on. With
    `run_dir=None` nothing is saved. Returns
    (state, metrics stacked over all chunks, including restored ones). Bit-identical to
    `divjax.engine.sim.simulate` and `make_run`: the same jitted `engine.advance` with state donation.
    """
    cfg = engine.cfg
    check_hparams(cfg, hp)
    fp = fingerprint(cfg, hp, key, program_options(engine.advance))
    if run_dir is not None:
        check_checkpoints_belong(run_dir, fp)
    if state is None:
        state = jit(engine.init)(key, hp)
    advance = compile_checked(jit(engine.advance, donate_argnums=0), state, hp, cfg=cfg)
    history = list(history or [])
    c = int(state.t) // cfg.eval_every
    if c != len(history):
        raise ValueError(f"state is at eval interval {c} but {len(history)} are recorded")
    last = cfg.num_chunks if stop_chunk is None else stop_chunk
    every_chunks = max(1, int(round(every_s / cfg.eval_every_s))) if every_s else None
    pending = None

    failed = []   # the first checkpoint write error: no more saves after it

    def do_save():
        if run_dir is None or failed:
            return
        try:
            save(run_dir, state, history, max_to_keep, fp=fp)
        except CheckpointWriteError as e:
            failed.append(e)
            print(f"\ndivjax: {e}: checkpointing stops here; the run goes on and writes its "
                  f"metrics at the end (free space, then rerun to have checkpoints)",
                  file=sys.stderr, flush=True)

    try:
        while c < last:
            state, pending = advance(state, hp)
            m = jax.device_get(pending)
            check_state(state, cfg, hp)
            history.append(m)
            pending = None
            c += 1
            if every_chunks and c % every_chunks == 0 and c < last:
                do_save()
            if progress is not None:
                progress(c, cfg.num_chunks, m)
    except KeyboardInterrupt:
        if pending is not None and len(history) < int(state.t) // cfg.eval_every:
            history.append(jax.device_get(pending))   # the interval finished; keep its metrics
        if _alive(state) and run_dir is not None and not failed:
            do_save()
        if _alive(state) and run_dir is not None and not failed:
            print(f"\ndivjax: interrupted at simulated t={int(state.t) * cfg.tick_s:g}s; "
                  f"checkpoint saved in {Path(run_dir) / CHECKPOINT_DIR} "
                  f"(resume with --resume {run_dir})", flush=True)
        raise
    if run_dir is not None and every_s:
        do_save()
    return state, _stack(history)


def _alive(state: SimState) -> bool:
    return not any(getattr(x, "is_deleted", lambda: False)()
                   for x in jax.tree.leaves(state) if isinstance(x, jax.Array))


def resume(run_dir: Path, progress: Callable | None = None, every_s: float | None = None,
           stop_chunk: int | None = None, engine: Engine | None = None):
    """Continue the run saved in `run_dir` to its end: (engine, hp, seed, state, metrics)."""
    from divjax.engine.sim import make_engine

    cfg, hp, seed, _ = load_run_spec(run_dir)
    engine = engine or make_engine(cfg, hp=hp)
    key = jax.random.key(seed)
    state, history = restore(run_dir, engine, hp, key=key)
    state, metrics = drive(engine, key, hp, run_dir=run_dir, every_s=every_s,
                           progress=progress, state=state, history=history,
                           stop_chunk=stop_chunk)
    return engine, hp, seed, state, metrics
