"""`divjax run`: one experiment, from its flags (or a checkpointed run) to its output directory.

The steps of `cmd_run`, each a function below: the config and OUT (`_new_run`, or `_resumed_run`
for --resume), the engine and its sizes (`_print_sizes`), --dry-run's memory report
(`_dry_run`), checkpoints and TensorBoard (`_start_checkpoints`), the progress line
(`_progress`), the simulation (`_simulate`, `_interrupted` on Ctrl-C), and the table and files
(`_finish`).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import jax
import numpy as np

from divjax.frontends import outdir, presets
from divjax.config import ConfigError, SimConfig, default_hparams
from divjax.frontends.flags import config_from_args, prepare_out
from divjax.plugins import label
from divjax.engine.xla_options import program_options


def cmd_run(args) -> int:
    """`divjax run`: build the engine, run it (or stop after the sizes, --dry-run) and write
    OUT's results; the exit code."""
    from divjax.engine.sim import make_engine

    cfg, hp, out = _resumed_run(args) if args.resume is not None else _new_run(args)
    t0 = time.perf_counter()
    probe = None
    if args.dry_run:   # the task's data sized from small builds: no n-node data (issue 33)
        from divjax.engine import memory_scale

        probe = memory_scale.DataProbe(cfg)
    engine = make_engine(cfg, task=probe and probe.task, hp=hp)
    _print_sizes(engine)
    _note_run_length_sizing(cfg, engine.cfg)
    if args.dry_run:
        return _dry_run(engine, probe)
    state, history = None, []
    if args.resume is not None:
        from divjax.engine import checkpoint

        state, history = checkpoint.restore(out, engine, hp, key=jax.random.key(args.seed))
        print(f"divjax: resuming {out} at simulated t={int(state.t) * engine.cfg.tick_s:g}s "
              f"({len(history)}/{engine.cfg.num_chunks} eval intervals done)")
    checkpointing = _start_checkpoints(args, out, engine.cfg, hp)
    tb = _tensorboard_writer(out / "tensorboard") if args.tensorboard else None
    progress = _progress(args, engine.cfg, engine.task.primary, tb)
    try:
        metrics = _simulate(engine, hp, args, out, checkpointing, progress, state, history)
    except KeyboardInterrupt as e:
        return _interrupted(e, checkpointing, out)
    finally:
        if tb is not None:
            tb.close()
    return _finish(engine, hp, metrics, args, out, time.perf_counter() - t0)


def _resumed_run(args):
    """(cfg, hp, OUT) of `--resume RUN_DIR`: its run spec, its seed and checkpoint interval
    (unless --checkpoint-every is given), and RUN_DIR adopted as OUT."""
    from divjax.engine import checkpoint

    _check_resume_flags(args)
    cfg, hp, seed, spec = checkpoint.load_run_spec(args.resume)
    _check_checkpoint_every(args.checkpoint_every, cfg)   # (not the run's own value)
    args.seed = seed
    if args.checkpoint_every is None:
        args.checkpoint_every = spec.get("checkpoint_every_s")
    out = prepare_out(args.resume, "", writes=outdir.RUN_OUTPUTS, resume=True, adopt=True)
    return cfg, hp, out


def _new_run(args):
    """(cfg, hp, OUT) of a new run from its flags; OUT (None with --dry-run) is claimed and its
    pending config.json written before any data is loaded or anything compiled."""
    cfg = config_from_args(args)
    _check_checkpoint_every(args.checkpoint_every, cfg)
    hp = default_hparams(cfg)
    out = None
    if not args.dry_run:   # found before any data is loaded or anything compiled
        out = prepare_out(args.out, time.strftime(
            f"%Y%m%d-%H%M%S-{label(cfg.algorithm)}-{label(cfg.task)}"), args.overwrite,
            writes=outdir.RUN_OUTPUTS)
        _write_pending_config(out, cfg, args.seed)
    return cfg, hp, out


def _print_sizes(engine) -> None:
    """The run's header lines: algorithm, task and sizes, the data's source, state memory."""
    from divjax.engine.sizing import memory_estimate

    cfg, task, layout = engine.cfg, engine.task, engine.layout
    print(f"divjax: {cfg.algorithm} on {task.name}: n={cfg.n_nodes}, Omega={layout.K}, "
          f"s={cfg.fanout}, D={layout.D} parameters, {cfg.n_stragglers} stragglers, "
          f"{cfg.duration_s:g} simulated s in ticks of {cfg.tick_s:g} s")
    if task.info.get("source"):
        print(f"divjax: data: {task.info['source']}")
    mem = memory_estimate(cfg, layout, cfg.ring_ticks)
    print(f"divjax: state memory {mem['total'] / 2**20:.1f} MiB "
          f"(ring {cfg.ring_ticks} slots, delivery={cfg.delivery}, "
          f"train capacity {cfg.train_capacity})")


def _note_run_length_sizing(cfg, resolved) -> None:
    """AD-PSGD with an automatic delay (--delay-ticks 0) sizes its delay ring and ping table for
    every tick of the run: say so, with what bounds them (docs/scaling.md, AD-PSGD at scale)."""
    if cfg.algorithm != "adpsgd" or cfg.delay_ticks > 0:
        return
    print(f"divjax: note: AD-PSGD's pong delays have no bound but the run's, so its ping table "
          f"({resolved.ping_slots} entries per node) and delay window ({resolved.delay_ticks} "
          f"ticks) are sized for the whole run ({resolved.num_ticks} ticks): memory and time "
          f"per tick grow with --duration-s; --delay-ticks N bounds them (a message that needs "
          f"more stops the run with an error naming the flag, it is never dropped)")


def _dry_run(engine, probe) -> int:
    """--dry-run: the memory model (XLA's temporaries traced at this n, `memory_temps`) and the
    largest n that fits on this device; exit code 0."""
    from divjax.engine import memory, memory_scale, memory_temps

    cfg, layout = engine.cfg, engine.layout
    temps = memory_temps.interval_temporaries(engine)
    model = memory.memory_model(cfg, layout, data_bytes=probe.bytes_at(cfg.n_nodes),
                                temporaries=temps)
    print(memory.format_model(model) + f"\n  ({probe.describe()})")
    biggest = memory_scale.largest_n(cfg, layout, ring_slots=cfg.ring_ticks,
                                     capacity_fraction=cfg.train_capacity / cfg.n_nodes,
                                     data_bytes_fixed=probe.fixed,
                                     data_bytes_per_node=probe.per_node,
                                     temporaries_per_node=temps / cfg.n_nodes)
    print(f"divjax: largest n that fits on {jax.devices()[0].device_kind} with this "
          f"config: {biggest} (ring {cfg.ring_ticks} slots, "
          f"{cfg.train_capacity / cfg.n_nodes:.0%} of the nodes training at one tick; "
          f"temporaries {temps / cfg.n_nodes / 2**10:.1f} KiB per node)")
    return 0


def _start_checkpoints(args, out, cfg, hp) -> bool:
    """Whether the run checkpoints (--checkpoint-every or --resume); records in OUT what
    checkpoints and TensorBoard will write, and a new checkpointed run's run spec."""
    from divjax.engine import checkpoint

    checkpointing = args.checkpoint_every is not None or args.resume is not None
    if checkpointing:   # recorded before orbax and save_run_spec write them
        outdir.record(out, checkpoint.RUN_SPEC, checkpoint.CHECKPOINT_DIR)
    if checkpointing and args.resume is None:
        checkpoint.save_run_spec(out, cfg, hp, args.seed,
                                 extra={"checkpoint_every_s": args.checkpoint_every})
    if args.tensorboard:
        outdir.record(out, "tensorboard")
    return checkpointing


def _progress(args, cfg, primary, tb):
    """progress(c, C, m) after each eval interval: TensorBoard scalars, and a progress bar
    (redrawn on a terminal; every tenth interval otherwise; none with --quiet)."""
    tty = sys.stdout.isatty()

    def progress(c, C, m):
        if tb is not None:
            step = int(round(float(m["time_s"]) / cfg.tick_s))
            for k, v in m.items():
                if k != "node":
                    tb.add_scalar(k, float(v), step)
        if args.quiet or (not tty and c % max(1, C // 10) and c != C):
            return
        bar = "#" * int(30 * c / C)
        print(f"\r[{bar:<30s}] t={float(m['time_s']):7.2f}s  {primary}="
              f"{float(m[primary + '_mean']):.4f} (avg model {float(m[primary + '_avgmodel']):.4f})"
              f"  consensus={float(m['consensus']):.3g}", end="" if tty else "\n", flush=True)

    return progress


def _simulate(engine, hp, args, out, checkpointing, progress, state, history):
    """The run's metrics: `checkpoint.drive` when checkpointing, else `sim.simulate`."""
    from divjax.engine import checkpoint
    from divjax.engine.sim import simulate

    if checkpointing:
        _, metrics = checkpoint.drive(
            engine, jax.random.key(args.seed), hp, run_dir=out,
            every_s=args.checkpoint_every, progress=progress, state=state, history=history)
    else:
        _, metrics = simulate(engine, jax.random.key(args.seed), hp, progress=progress)
    return metrics


def _interrupted(e: KeyboardInterrupt, checkpointing: bool, out) -> int:
    """Ctrl-C or SIGTERM during the run: say whether and how it can be resumed; exit code 130."""
    from divjax.engine import checkpoint

    why = f" ({e})" if str(e) else ""
    if not checkpointing:
        print(f"\ndivjax: interrupted{why} (no checkpoint: use --checkpoint-every SECONDS)",
              file=sys.stderr)
    elif checkpoint.latest_step(out) is None:
        print(f"\ndivjax: interrupted{why} before the first checkpoint: nothing to resume",
              file=sys.stderr)
    else:
        print(f"divjax: interrupted{why}; continue with divjax run --resume {out}",
              file=sys.stderr)
    return 130


def _finish(engine, hp, metrics, args, out, wall: float) -> int:
    """The metrics table, then OUT's files (a full disk: one line and exit code 1)."""
    from divjax.frontends import report

    cfg, task, layout, primary = engine.cfg, engine.task, engine.layout, engine.task.primary
    if not args.quiet and sys.stdout.isatty():
        print()
    cols = ["time_s", f"{primary}_mean", f"{primary}_min", f"{primary}_max",
            f"{primary}_avgmodel", "consensus", "msgs_delivered", "msgs_dropped",
            "msgs_replaced"]
    if primary != "loss" and "loss_mean" in metrics:
        cols.insert(5, "loss_mean")
    if np.any(np.asarray(metrics.get("msgs_lost", 0.0)) > 0):   # loss, churn, download limits
        cols.append("msgs_lost")
    print(report.format_table(metrics, cols))
    extra = {"seed": args.seed, "wall_s": wall, "jax": jax.__version__,
             "device": jax.devices()[0].device_kind,
             # they decide float rounding
             "xla_compiler_options": program_options(engine.advance),
             "task_primary": primary}
    if args.resume is not None:
        extra["resumed"] = True
    info = dict(task.info, primary=primary)
    try:
        _write_results(out, cfg, hp, metrics, info, extra, primary, layout, task, wall, args,
                       report.format_table(metrics, cols))
    except OSError as e:   # a full disk: one line, not a traceback (the table is printed above)
        what = f"{Path(e.filename).name}: " if e.filename else ""
        print(f"divjax: error: the results could not all be written to {out} "
              f"({what}{e.strerror or e}): free space or choose another --out; the metrics "
              f"table is printed above", file=sys.stderr)
        return 1
    print(f"divjax: {wall:.1f} s wall; wrote {out}/ (config.json, metrics.json, metrics.csv, "
          f"plot.png, summary.md)")
    return 0


def _write_results(out, cfg, hp, metrics, info, extra, primary, layout, task, wall, args,
                   table) -> None:
    """OUT/config.json, metrics.*, plot.png (`report.write_run_dir`) and summary.md."""
    from divjax.frontends import report

    report.write_run_dir(out, cfg, hp, metrics, info, extra)
    final = float(np.asarray(metrics[f"{primary}_mean"])[-1])
    outdir.write_output(
        out, "summary.md",
        f"# {cfg.algorithm} on {task.name}\n\n"
        f"- n={cfg.n_nodes}, Omega={layout.K}, s={cfg.fanout}, {cfg.n_stragglers} stragglers, "
        f"{cfg.duration_s:g} simulated seconds, seed {args.seed}\n"
        f"- final {primary} (mean over nodes): {final:.4f}\n"
        f"- wall time: {wall:.1f} s on {jax.devices()[0].device_kind}"
        f"{' (this session, resumed from a checkpoint)' if args.resume is not None else ''}\n\n"
        f"```\n{table}\n```\n")


def _check_resume_flags(args) -> None:
    """--resume continues a run exactly as it was configured: flags it would ignore are
    refused (configuration flags, --seed, --preset, --out, --overwrite)."""
    fields = {f.name for f in dataclasses.fields(SimConfig)}
    ignored = ["--" + k.replace("_", "-") for k in vars(args) if k in fields]
    ignored += [flag for flag, on in (("--seed", args.seed != 0), ("--out", args.out is not None),
                                      ("--preset", args.preset != presets.DEFAULT_PRESET),
                                      ("--overwrite", args.overwrite)) if on]
    if ignored:
        raise ConfigError(f"--resume {args.resume} continues that run with its own config and "
                          f"seed (its run.json): drop {' '.join(ignored)}, or start a new run")


def _check_checkpoint_every(every, cfg: SimConfig) -> None:
    """--checkpoint-every: a positive whole number of eval intervals (checkpoints are taken
    between them)."""
    if every is None:
        return
    ratio = every / cfg.eval_every_s if np.isfinite(every) and every > 0 else -1.0
    if ratio < 1 - 1e-9 or abs(ratio - round(ratio)) > 1e-6:
        raise ConfigError(f"--checkpoint-every {every:g} is invalid: checkpoints are taken "
                          f"between eval intervals, so give a positive multiple of "
                          f"--eval-every-s {cfg.eval_every_s:g}")


def _write_pending_config(out: Path, cfg: SimConfig, seed: int) -> None:
    """OUT/config.json at the start of a run (the unresolved config and the seed; the finished
    run rewrites it in full): proves OUT writable before data is loaded or code compiled."""
    import json

    outdir.write_output(out, "config.json", json.dumps(
        {"config": dataclasses.asdict(cfg), "seed": seed, "status": "running"}, indent=1,
        default=str))


def _tensorboard_writer(logdir: Path):
    """A SummaryWriter-like object (add_scalar, close), or None with a message if none exists."""
    try:
        from tensorboardX import SummaryWriter

        return SummaryWriter(str(logdir))
    except ImportError:
        pass
    try:
        import tensorflow as tf  # noqa: F401

        class _TF:
            def __init__(self, path):
                self.w = tf.summary.create_file_writer(str(path))

            def add_scalar(self, tag, value, step):
                with self.w.as_default():
                    tf.summary.scalar(tag, value, step=step)

            def close(self):
                self.w.flush()

        return _TF(logdir)
    except ImportError:
        print("divjax: --tensorboard skipped: no writer installed "
              "(pip install tensorboardX, or tensorflow)", file=sys.stderr)
        return None
