"""One sharded run over several processes (jax.distributed): launch it once per process.

Every process builds the same tiny synthetic config, key and data; the node axis is sharded over
the devices of all processes (divjax.engine.sharding.make_sharded_run over jax.devices()); process 0
writes the final metrics (and a checksum of the final models) as JSON.

    # two processes on this machine, one CPU device each (tests/test_distributed.py does this):
    python scripts/distributed_run.py --process-id 0 --num-processes 2 \\
        --coordinator 127.0.0.1:12345 --cpu-devices 1 --out run.json --n-nodes 8 --duration-s 1 &
    python scripts/distributed_run.py --process-id 1 --num-processes 2 \\
        --coordinator 127.0.0.1:12345 --cpu-devices 1 --out run.json --n-nodes 8 --duration-s 1

    # the same run in one process on 2 CPU devices (no jax.distributed):
    python scripts/distributed_run.py --num-processes 1 --cpu-devices 2 --out one.json ...

On several hosts the same command runs on each, with --coordinator HOST0:PORT (an address of
the host of process 0 that the others can reach) and process ids 0..N-1 (docs/scaling.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--num-processes", type=int, default=1,
                   help="1: a plain one-process run (jax.distributed is not initialized)")
    p.add_argument("--coordinator", default="127.0.0.1:12345",
                   help="HOST:PORT of process 0's coordinator service")
    p.add_argument("--out", type=Path, required=True, help="JSON written by process 0")
    p.add_argument("--cpu-devices", type=int, default=0,
                   help="run on CPU with this many host devices per process "
                        "(sets JAX_PLATFORMS=cpu and XLA's host device count); 0 = JAX's default")
    p.add_argument("--cpu-collectives", default="gloo", help="gloo or mpi (CPU devices only)")
    p.add_argument("--init-timeout-s", type=int, default=60,
                   help="how long processes wait for each other at start-up")
    # the config: a tiny synthetic run
    p.add_argument("--algorithm", default="divshare")
    p.add_argument("--n-nodes", type=int, default=8)
    p.add_argument("--n-fragments", type=int, default=3)
    p.add_argument("--fanout", type=int, default=2)
    p.add_argument("--n-stragglers", type=int, default=2)
    p.add_argument("--duration-s", type=float, default=1.0)
    p.add_argument("--eval-every-s", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--approx-metrics", action="store_true",
                   help="make_sharded_run(exact_metrics=False)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.cpu_devices:  # before JAX starts its backend
        os.environ["JAX_PLATFORMS"] = "cpu"
        flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
        flags.append(f"--xla_force_host_platform_device_count={args.cpu_devices}")
        os.environ["XLA_FLAGS"] = " ".join(flags)

    import jax
    import numpy as np

    from divjax.config import SimConfig, default_hparams
    from divjax.engine.sharding import fetch, initialize_distributed, make_sharded_run, node_mesh
    from divjax.engine.xla_options import jit

    t0 = time.perf_counter()
    if args.num_processes > 1:
        initialize_distributed(args.coordinator, args.num_processes, args.process_id,
                               cpu_collectives=args.cpu_collectives,
                               initialization_timeout=args.init_timeout_s)
    cfg = SimConfig(task="synthetic", algorithm=args.algorithm, n_nodes=args.n_nodes,
                    n_fragments=args.n_fragments, fanout=args.fanout,
                    n_stragglers=args.n_stragglers, local_steps=2, batch_size=4, tick_s=0.01,
                    duration_s=args.duration_s, eval_every_s=args.eval_every_s, compute_s=0.1,
                    straggler_compute_factor=1.5, straggler_mbps=(0.5, 0.1))
    hp = default_hparams(cfg)
    mesh = node_mesh(jax.devices())
    run = make_sharded_run(cfg, hp=hp, mesh=mesh, exact_metrics=not args.approx_metrics)
    state, metrics = jit(run)(jax.random.key(args.seed), hp)
    metrics = fetch(metrics)            # every process takes part in the gathers
    params = fetch(state.params)
    seconds = time.perf_counter() - t0

    if jax.process_index() == 0:
        out = {
            "process_count": jax.process_count(),
            "devices": len(jax.devices()),
            "params_spec": str(state.params.sharding.spec),
            "params_sha256": hashlib.sha256(np.ascontiguousarray(params).tobytes()).hexdigest(),
            "seconds": seconds,
            "metrics": jax.tree.map(lambda x: np.asarray(x).tolist(), metrics),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1))
        print(f"process 0 of {jax.process_count()}: {len(jax.devices())} devices, "
              f"{seconds:.1f} s, loss_mean {out['metrics']['loss_mean'][-1]:.6g}, "
              f"wrote {args.out}", flush=True)
    if args.num_processes > 1:
        jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
