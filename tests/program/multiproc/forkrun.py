"""Run emitted programs' `main()` in WORLD forked ranks: torch is imported once, so a launch costs
seconds rather than WORLD interpreter start-ups (see TORCH_NOTES). Jobs run one after another in the
same ranks, each with its own rendezvous port.

    python forkrun.py WORLD JOBS.json      JOBS.json: [{"dir": ..., "args": [...]}, ...]

Exits non-zero if any rank of any job fails; a rank's traceback goes to stderr. `FORKRUN_PRELOAD`
(comma-separated module names, e.g. `transformers`) are imported before forking too.
"""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
import traceback

import torch  # noqa: F401  (imported once, before forking)


def _free_ports(n: int) -> list[int]:
    """`n` ports free now, from below the kernel's ephemeral range. Every job's port is picked before the
    first job runs; one the kernel handed out (bind to port 0) could meanwhile be taken by an earlier
    job's own connections, which draw from that range (seen in CI: EADDRINUSE on the third job)."""
    try:
        low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    ports, port = [], 1024 + (os.getpid() * 7919) % max(1, low - 1024 - 4096)
    while len(ports) < n and port < low:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                ports.append(port)
            except OSError:
                pass
        port += 1
    if len(ports) < n:
        raise RuntimeError(f"no {n} free ports below {low}")
    return ports


def _load(directory: str):
    spec = importlib.util.spec_from_file_location(f"train_{abs(hash(directory))}", os.path.join(directory, "train.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    world, jobs = int(sys.argv[1]), json.load(open(sys.argv[2]))
    for name in filter(None, os.environ.get("FORKRUN_PRELOAD", "").split(",")):
        importlib.import_module(name)
    programs = [_load(j["dir"]) for j in jobs]
    ports = _free_ports(len(jobs))
    children = []
    for rank in range(world):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                for job, program, port in zip(jobs, programs, ports):
                    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
                    os.environ.update(job.get("env", {}))
                    program.main(job["args"])
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        children.append(pid)
    failed, alive = 0, set(children)
    while alive:  # a failed rank ends the launch: the others would wait for it in a collective forever
        pid, status = os.wait()
        alive.discard(pid)
        if os.waitstatus_to_exitcode(status) != 0 and not failed:
            failed = 1
            for other in alive:
                os.kill(other, 9)
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
