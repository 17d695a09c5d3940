"""mtl: what is trained and run. A shared encoder, one head per task, the training loop, bundles.

Public API (imported lazily, so `import mtl` stays cheap for the gateway, which needs no torch):
    load_bundle, save_bundle, Bundle, BundleError, Encoded, FORMAT_VERSION   (mtl.bundle)
    MultiTaskModel                                                           (mtl.model)
    train, run_training                                                      (mtl.train)
    TasksConfig, TaskSpec, TaskType, load_config, parse_config, ConfigError  (mtl.config)
"""

from importlib import import_module

_EXPORTS = {
    "load_bundle": "mtl.bundle", "save_bundle": "mtl.bundle", "Bundle": "mtl.bundle",
    "BundleError": "mtl.bundle", "Encoded": "mtl.bundle", "FORMAT_VERSION": "mtl.bundle",
    "MultiTaskModel": "mtl.model",
    "train": "mtl.train", "run_training": "mtl.train",
    "TasksConfig": "mtl.config", "TaskSpec": "mtl.config", "TaskType": "mtl.config",
    "load_config": "mtl.config", "parse_config": "mtl.config", "ConfigError": "mtl.config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mtl' has no attribute '{name}'")
