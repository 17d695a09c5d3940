"""Model threads may run niced, so a front door sharing their cores keeps its CPU under overload.

Each check runs in a child process: a process may raise its own nice value but never lower it
again, so renicing pytest itself would slow every later test.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from cluster.serve_config import parse_serve_config

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")


def _child(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         check=True, timeout=60)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_only_the_thread_that_runs_the_model_is_niced():
    """Renicing the whole replica (its event loop, Ray's threads) starved its hops under overload:
    only the model's worker thread, and threads it starts (torch's pool), yield the CPU."""
    got = _child("""
        import asyncio, json, os, threading
        from cluster.replicas.core import ReplicaCore

        def nice_of(tid):
            return os.getpriority(os.PRIO_PROCESS, tid)

        def model():
            child = {}
            t = threading.Thread(target=lambda: child.setdefault("nice", nice_of(threading.get_native_id())))
            t.start(); t.join()  # like torch's intra-op pool, started from the model thread
            return nice_of(threading.get_native_id()), child["nice"]

        async def main():
            core = ReplicaCore(60.0, nice=7)
            loop_tid = threading.get_native_id()
            in_model, started_by_it = await core.run_on_model(model)
            return in_model, started_by_it, nice_of(loop_tid)
        in_model, started_by_it, loop = asyncio.run(main())
        print(json.dumps({"model": in_model, "started_by_it": started_by_it, "loop": loop,
                          "main": nice_of(threading.get_native_id())}))
    """)
    assert got == {"model": 7, "started_by_it": 7, "loop": 0, "main": 0}


def test_nice_zero_leaves_the_process_alone():
    got = _child("""
        import asyncio, json, os, threading
        from cluster.replicas.core import ReplicaCore, lower_cpu_priority
        seen = asyncio.run(ReplicaCore(60.0).run_on_model(
            lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        print(json.dumps({"changed": lower_cpu_priority(0), "in_model": seen}))
    """)
    assert got == {"changed": False, "in_model": 0}


def test_serve_yaml_leaves_niceness_off_by_default_and_checks_the_range():
    cfg = parse_serve_config({})
    assert cfg.encoder.nice == 0 and cfg.generator.nice == 0
    assert parse_serve_config({"encoder": {"nice": 10}}).encoder.nice == 10
    with pytest.raises(Exception, match="nice"):
        parse_serve_config({"encoder": {"nice": 20}})
