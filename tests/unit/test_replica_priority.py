"""Model replicas run niced, so the front door sharing their cores keeps its CPU under overload.

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


def test_every_thread_and_those_started_later_run_niced():
    got = _child("""
        import asyncio, json, os, threading
        from cluster.replicas.core import ReplicaCore

        def nice_of_all():
            return sorted({os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir("/proc/self/task")})

        started = threading.Event(); stop = threading.Event()
        def idle():  # a thread that exists before the first batch (like torch's pool after load)
            started.set(); stop.wait()
        threading.Thread(target=idle, daemon=True).start(); started.wait()
        before = nice_of_all()

        async def main():
            core = ReplicaCore(60.0, nice=7)
            # the model call runs in a worker thread that did not exist before
            in_worker = await core.run_on_model(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            return in_worker
        in_worker = asyncio.run(main())
        print(json.dumps({"before": before, "after": nice_of_all(), "in_worker": in_worker}))
    """)
    assert got["before"] == [0] or min(got["before"]) < 7  # the test itself starts un-niced
    assert got["after"] == [7]
    assert got["in_worker"] == 7


def test_nice_zero_leaves_the_process_alone():
    got = _child("""
        import asyncio, json, os
        from cluster.replicas.core import ReplicaCore, lower_cpu_priority
        base = os.getpriority(os.PRIO_PROCESS, 0)
        asyncio.run(ReplicaCore(60.0).run_on_model(lambda: None))
        print(json.dumps({"changed": lower_cpu_priority(0), "same": os.getpriority(os.PRIO_PROCESS, 0) == base}))
    """)
    assert got == {"changed": 0, "same": True}


def test_serve_yaml_nices_model_replicas_by_default_and_checks_the_range():
    cfg = parse_serve_config({})
    assert cfg.encoder.nice == 10 and cfg.generator.nice == 10
    assert parse_serve_config({"encoder": {"nice": 0}}).encoder.nice == 0
    with pytest.raises(Exception, match="nice"):
        parse_serve_config({"encoder": {"nice": 20}})
