"""Random small partition instances: uneven or identical blocks, every schedule, every end model."""
from __future__ import annotations

import random

from planner.cost.terms import DpModel
from planner.search.partition import Problem


def instance(rng: random.Random, uniform: bool, schedule: str | None = None) -> Problem:
    schedule = schedule or rng.choice(["gpipe", "1f1b", "interleaved"])
    vpp = 2 if schedule == "interleaved" else 1
    pp = rng.randint(2, 3) if vpp == 2 else rng.randint(2, 6)
    chunks = pp * vpp
    blocks = rng.randint(chunks, chunks + (1 if chunks > 4 else 2 if chunks > 2 else 3))
    kinds = [False] + [True] * blocks + [False]
    rows, block = [], None
    for is_block in kinds:
        if is_block and block is not None and uniform:
            rows.append(block)
            continue
        f = rng.randint(5, 40)
        b = f * 2 + rng.randint(0, 9)
        a = rng.randint(20, 60)
        if is_block:
            row = (f, (b, b + rng.randint(1, 5), b + f), (a, a * 2 // 3, a // 6),
                   (8, 8 + a // 3, 8 + a - a // 6), rng.randint(10, 50), 4, rng.randint(0, 6), rng.randint(0, 9),
                   rng.randint(0, 9), rng.randint(0, 30))
            block = row
        else:
            a = rng.randint(1, 30)
            row = (f, (b,) * 3, (a,) * 3, (8,) * 3, rng.randint(10, 50), rng.choice([4, 12]), rng.randint(0, 6),
                   rng.randint(0, 9), rng.randint(0, 9), rng.randint(0, 30))
        rows.append(row)
    fwd, bwd, act, tr, static, out, opt, sync, gather, cbuf = zip(*rows)
    n = rng.choice([pp, pp + 1, 2 * pp]) if vpp == 1 else 2 * pp
    if schedule == "gpipe":
        n = rng.choice([1, 2, pp, 2 * pp])
    kind = rng.choice(["none", "ddp", "ddp_tp", "fsdp"])
    dp = DpModel(kind, n, fixed=rng.randint(0, 20) if kind.startswith("ddp") else 0, bucket=rng.randint(5, 40),
                 zero3=rng.random() < 0.5)
    if kind != "fsdp":
        gather, cbuf = (0,) * len(kinds), (0,) * len(kinds)
    if kind == "none":
        sync = (0,) * len(kinds)
    send = rng.randint(0, 6)
    return Problem(fwd=fwd, bwd=bwd, act=act, transient=tr, static=static, out=out, is_block=tuple(kinds), pp=pp,
                   vpp=vpp, micro_batches=n, schedule=schedule, cap=(rng.randint(300, 900),) * pp,
                   send=tuple(tuple(0 if c == chunks - 1 else send + (i % 3) * (not uniform) for i in range(len(kinds)))
                              for c in range(chunks)),
                   dp=dp, opt=opt, sync=sync, gather=gather, comm_buffer=cbuf, recompute=rng.choice([None] * 4 + ["full"]))
