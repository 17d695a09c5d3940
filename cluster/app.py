"""The Serve application: Gateway (ingress) -> Scheduler (one replica) -> model pools.

    client --HTTP--> Gateway (FastAPI, autoscaled on ongoing requests)
                        | ServeBackend: submit(job) / stats() / ready()
                        v
                     Scheduler (1 replica, wraps scheduler.actor.SchedulerActor)
                        | run_batch(payloads) through Serve DeploymentHandles
                        v
                     EncoderReplica pool (autoscaled on replica load; GPU when configured)
                     GeneratorReplica pool (optional)

`build_app(args)` is a Serve application builder: `serve run cluster.app:build_app
bundle=PATH`, the `import_path` of the file `mtc serve --export-config` writes, and what
`mtc serve` itself deploys. `args` is a serve.yaml mapping (cluster/serve_config.py).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ray import serve
from ray.serve import Application

from cluster.replicas.encoder import encoder_deployment
from cluster.serve_backend import ServeBackend
from cluster.serve_config import (
    GATEWAY_DEPLOYMENT,
    SCHEDULER_DEPLOYMENT,
    ServeConfig,
    ServeConfigError,
    parse_serve_config,
)
from cluster.serve_export import seal_api_keys
from scheduler.config import ENCODER_POOL, GENERATOR_POOL, load_scheduler_config

logger = logging.getLogger("ray.serve")


@serve.deployment(name=SCHEDULER_DEPLOYMENT, num_replicas=1)
class Scheduler:
    """One replica owning the queues; the pools are Serve handles it dispatches batches to."""

    def __init__(self, scheduler_config: dict, encoder: Any, generator: Any | None = None,
                 bundle_path: str | None = None, variants: dict[str, Any] | None = None):
        from scheduler.actor import SchedulerActor  # noqa: PLC0415
        from scheduler.pools import as_pool  # noqa: PLC0415

        config = load_scheduler_config(scheduler_config)
        self.handles = {ENCODER_POOL: encoder, **(variants or {})}  # variants: pool name -> handle
        if generator is not None:
            self.handles[GENERATOR_POOL] = generator
        pools = {name: as_pool(handle) for name, handle in self.handles.items()}
        self.actor = SchedulerActor(config, pools)
        self.bundle_path = bundle_path

    async def serving_bundle(self) -> str | None:
        """The bundle the encoder pool serves: batch jobs (cluster/jobs) tokenize and post-process
        with the same tokenizer and task specs as the gateway, so their rows equal HTTP answers."""
        return self.bundle_path

    async def submit(self, job):
        return (await self.submit_many([job]))[0]

    async def submit_many(self, jobs: list) -> list:
        """All texts of one request in one handle call (the per-call overhead, not the model,
        bounds a 2-core box), admitted all or nothing; each job is still scheduled on its own."""
        from scheduler.core import InvalidJob  # noqa: PLC0415
        from scheduler.request import Outcome, Status  # noqa: PLC0415

        try:
            return await self.actor.submit_many(jobs)
        except InvalidJob as err:
            # The gateway validates first; this only guards other callers (batch jobs, tests).
            return [Outcome(Status.FAILED, None, f"invalid job: {err}", None, 0.0, 0.0, 0) for _ in jobs]

    async def stream(self, job):
        """A streamed generation through the scheduler: an Outcome alone when it does not start,
        else the generator replica's items (scheduler/streams.py). Through a streaming handle."""
        from scheduler.core import InvalidJob  # noqa: PLC0415
        from scheduler.request import Outcome, Status  # noqa: PLC0415

        try:
            async for item in self.actor.stream(job):
                yield item
        except InvalidJob as err:
            yield Outcome(Status.FAILED, None, f"invalid job: {err}", None, 0.0, 0.0, 0)

    async def edge_report(self, report) -> None:
        """A gateway replica's cumulative counts of what its callers saw (scheduler.front_door)."""
        self.actor.edge_report(report)

    async def __del__(self):
        await self.actor.close()

    async def stats(self) -> dict:
        return self.actor.stats()

    async def ready(self):
        return await self.actor.ready()

    async def replica_counters(self, pool: str = ENCODER_POOL) -> dict:
        """One replica's counters (tests and `mtc status` read these via the Scheduler)."""
        return await self.handles[pool].counters.remote()


@serve.deployment(name=GATEWAY_DEPLOYMENT)
@serve.ingress()
class Gateway:
    """The HTTP ingress. Its FastAPI app is built on the replica from the bundle's tokenizer and
    task specs (no weights) and a `ServeBackend` over the scheduler handle."""

    def __init__(self, scheduler: Any, bundle_path: str, settings: dict, generator: Any | None = None):
        self.backend = ServeBackend(scheduler, generator)
        self.bundle_path = bundle_path
        self.settings = settings

    def __serve_build_asgi_app__(self):
        from cluster.http.app import build_gateway_app  # noqa: PLC0415
        from cluster.http.schemas import GatewaySettings  # noqa: PLC0415

        settings = GatewaySettings.from_env(bundle_path=self.bundle_path, **self.settings)
        return build_gateway_app(self.backend, settings)


def _bundle_path(config: ServeConfig) -> str:
    if not config.bundle:
        raise ServeConfigError("bundle: no bundle path given (pass BUNDLE or set `bundle:` in serve.yaml)")
    path = Path(config.bundle).expanduser().resolve()
    if not path.is_dir():
        raise ServeConfigError(f"bundle: {str(path)!r} is not a directory (train one with `mtc train`)")
    return str(path)


def _variant_bundles(config: ServeConfig, main: str) -> dict[str, str]:
    """Each encoder variant's bundle path, checked to answer like the main bundle: the gateway
    tokenizes for every pool with the main bundle's tokenizer and post-processes with its task
    specs, so a variant must have the same tasks.json and tokenizer.json (int8 and distilled
    bundles copy both from the bundle they were made from)."""
    out = {}
    for variant in config.encoder_variants:
        path = _bundle_path(config.with_overrides(bundle=variant.bundle))
        for name in ("tasks.json", "tokenizer.json"):
            if (Path(path) / name).read_bytes() != (Path(main) / name).read_bytes():
                raise ServeConfigError(
                    f"encoder_variants[{variant.name}].bundle: its {name} differs from the main bundle's "
                    f"({main}); a variant must serve the same tasks with the same tokenizer: make it "
                    "with `mtc export --int8` or `mtc distill` from the main bundle")
        out[variant.pool] = path
    return out


def _pool_variants(main: str, variant_paths: dict[str, str]) -> dict[str, str]:
    """Pool name -> the variant of the model it serves ("full", "int8", ...), named in answers."""
    from mtl.bundle import MANIFEST, VARIANT_FULL  # noqa: PLC0415

    paths = {ENCODER_POOL: main, **variant_paths}
    return {pool: json.loads((Path(path) / MANIFEST).read_text()).get("variant", VARIANT_FULL)
            for pool, path in paths.items()}


def _gateway_settings(config: ServeConfig, pool_variants: dict[str, str] | None = None) -> dict:
    """Gateway settings that must agree with the rest of the config: the priority classes the
    scheduler knows (most urgent first), whether the OpenAI routes have a generator behind them,
    and the variant each encoder pool serves."""
    scheduler_config = load_scheduler_config(config.scheduler_config())
    classes = [c.name for c in scheduler_config.classes]
    settings = {"priority_classes": classes, **seal_api_keys(config).gateway.settings}
    if pool_variants and len(pool_variants) > 1:
        settings["pool_variants"] = pool_variants
    if "default_priority" not in settings and "standard" not in settings["priority_classes"]:
        settings["default_priority"] = settings["priority_classes"][0]
    if config.generator.enabled:
        settings.setdefault("generator_model", config.generator.model_path or "SmolLM2-135M-Instruct")
    return settings


def build_application(config: ServeConfig, *, encoder: Any | None = None) -> Application:
    """Bind the deployment graph. `encoder` replaces the EncoderReplica deployment (tests and
    benchmarks pass a cheap stand-in bound the same way)."""
    bundle_path = _bundle_path(config)
    encoder = encoder if encoder is not None else encoder_deployment(config, bundle_path)
    variant_paths = _variant_bundles(config, bundle_path)
    variants = {variant.pool: encoder_deployment(config, variant_paths[variant.pool], variant)
                for variant in config.encoder_variants}
    generator = None
    if config.generator.enabled:
        from cluster.replicas.generator import generator_deployment  # noqa: PLC0415

        generator = generator_deployment(config)
    try:
        settings = _gateway_settings(config, _pool_variants(bundle_path, variant_paths))
    except ValidationError as err:  # a variant's serves_first names no class (scheduler/config.py)
        raise ServeConfigError(f"scheduler config: {err}") from None
    scheduler = Scheduler.options(**config.scheduler.deployment_options()).bind(
        config.scheduler_config(), encoder, generator, bundle_path, variants
    )
    return Gateway.options(**config.gateway.deployment_options()).bind(
        scheduler, bundle_path, settings, generator
    )


def scheduler_application(config: ServeConfig, encoder: Any) -> Application:
    """Scheduler + encoder pool without the HTTP gateway (integration tests and benchmarks drive
    the Scheduler handle's `submit` directly)."""
    return Scheduler.options(**config.scheduler.deployment_options()).bind(config.scheduler_config(), encoder)


def build_app(args: dict | ServeConfig) -> Application:
    """Serve application builder (`import_path: cluster.app:build_app`)."""
    return build_application(parse_serve_config(args))
