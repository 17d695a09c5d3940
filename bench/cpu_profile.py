"""CPU per request along the request path: proxy, gateway, scheduler, encoder replica, client.

`mtc bench cpu BUNDLE` deploys the stack on a fresh local Ray, sends single-text requests one
after another from one keep-alive connection, and reads the CPU time (user + system) each Serve
process used, per request, for three paths:
  * served: an interactive request that runs the model;
  * refused by the scheduler: an interactive request with an 8 ms deadline (the whole front door,
    tokenization and the scheduler hop, then 429; 504 where the edge alone spent the 8 ms;
    interactive, because the gateway answers a lower class itself once the scheduler refused it);
  * refused at the edge: a batch-class request that the gateway's front door refuses before any
    of that (settings `front_door.share: [1, 0, 0]`, no hold).
Per-request CPU is what bounds the front door: refusing only helps while its cost r is far below
the serving cost (issue 9: at 2x load with 20 % interactive, r must stay under ~0.4 of it).
Sequential requests keep the machine otherwise idle, so these are CPU seconds, not waiting.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import psutil

# Serve's process titles: "ray::ServeReplica:<app>:<deployment>" and "ray::ProxyActor".
ROLES = {"proxy": "ProxyActor", "haproxy": "haproxy", "gateway": ":Gateway", "scheduler": ":Scheduler",
         "replica": ":EncoderReplica"}


@dataclass
class PathCost:
    name: str
    requests: int
    status: dict[int, int]
    cpu_ms: dict[str, float]  # role -> CPU ms per request

    @property
    def total_ms(self) -> float:
        return sum(self.cpu_ms.values())


def serve_processes() -> dict[str, list[psutil.Process]]:
    out: dict[str, list[psutil.Process]] = {role: [] for role in ROLES}
    for proc in psutil.process_iter(["cmdline"]):
        title = " ".join(proc.info.get("cmdline") or [])
        first = title.split(" ")[0]
        for role, mark in ROLES.items():
            if (title.startswith("ray::") and mark in first) or (role == "haproxy" and first.endswith("/haproxy")):
                out[role].append(proc)
    return out


def _cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def measure_path(name: str, url: str, body: dict, n: int, procs: dict[str, list[psutil.Process]]) -> PathCost:
    status: dict[int, int] = {}
    me = psutil.Process()
    with httpx.Client(timeout=30) as client:
        for _ in range(5):  # warm the connection and the code path
            client.post(url, json=body)
        before = {role: _cpu_s(ps) for role, ps in procs.items()}
        client_before = _cpu_s([me])
        for _ in range(n):
            code = client.post(url, json=body).status_code
            status[code] = status.get(code, 0) + 1
        after = {role: _cpu_s(ps) for role, ps in procs.items()}
        client_after = _cpu_s([me])
    cpu_ms = {role: 1000.0 * (after[role] - before[role]) / n for role in procs}
    cpu_ms["client (httpx)"] = 1000.0 * (client_after - client_before) / n
    return PathCost(name, n, status, cpu_ms)


def run_cpu_profile(bundle_path: str, requests: int = 300, log=print) -> list[PathCost]:
    import ray  # noqa: PLC0415
    from ray import serve  # noqa: PLC0415

    from bench.serve_bench import deploy_stack  # noqa: PLC0415
    from bench.serve_load import sample_texts, wait_http  # noqa: PLC0415

    text = sample_texts()[0]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        port = 8000
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        deploy_stack(bundle_path, 1, 32, 1.0, gateway_settings={
            "front_door": {"share": [1.0, 1.0, 0.0], "max_hold_s": 0.0}})
        url = f"http://127.0.0.1:{port}"
        wait_http(url, "/healthz")
        procs = serve_processes()
        log("processes: " + ", ".join(f"{r}={len(p)}" for r, p in procs.items()))
        predict = url + "/v1/predict"
        paths = [
            ("served (interactive, 1 text, all tasks)", {"texts": [text], "priority": "interactive"}),
            ("refused by the scheduler (interactive, 8 ms deadline)",
             {"texts": [text], "priority": "interactive", "deadline_ms": 8}),
            ("refused at the edge (front door)", {"texts": [text], "priority": "batch"}),
        ]
        out = []
        for name, body in paths:
            log(f"measuring: {name} x {requests}")
            out.append(measure_path(name, predict, body, requests, procs))
        return out
    finally:
        serve.shutdown()
        ray.shutdown()


def format_costs(costs: list[PathCost]) -> str:
    roles = list(costs[0].cpu_ms)
    lines = ["| path | " + " | ".join(roles) + " | server total | statuses |",
             "|---|" + "---|" * (len(roles) + 2)]
    for c in costs:
        server = sum(v for k, v in c.cpu_ms.items() if not k.startswith("client"))
        cells = " | ".join(f"{c.cpu_ms[r]:.2f}" for r in roles)
        lines.append(f"| {c.name} | {cells} | **{server:.2f}** | {c.status} |")
    served = sum(v for k, v in costs[0].cpu_ms.items() if not k.startswith("client"))
    for c in costs[1:]:
        own = sum(v for k, v in c.cpu_ms.items() if not k.startswith("client"))
        lines.append(f"\nr = {c.name} / served = {own / served:.2f}" if served else "")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    import sys

    t0 = time.time()
    print(format_costs(run_cpu_profile(sys.argv[1] if len(sys.argv) > 1 else "bundles/default")))
    print(f"({time.time() - t0:.0f} s)")
