"""The model replicas: encoder and generator pools over one shared replica core, and the
autoscaling policy that sizes them.

- `core`: `ReplicaCore` (model lock, load metric, stall check, errors) and `ReplicaMethods`.
- `encoder`: `EncoderCore`, the `EncoderReplica` Serve deployment, `encoder_deployment(config, bundle)`.
- `generator`: `GeneratorCore`, the `GeneratorReplica` deployment, `generator_deployment(config)`.
- `payload`: what the gateway sends each pool (`EncoderPayload`; the generator's dict, validated).
- `autoscaling`: `LoadTracker`, `LoadPolicy` (Serve custom autoscaling on replica load).

Only the Ray-free names are imported here; `encoder` and `generator` import Ray.
"""
from cluster.replicas.autoscaling import LOAD_METRIC, POLICY_IMPORT_PATH, LoadPolicy, LoadTracker
from cluster.replicas.core import ReplicaCore, ReplicaMethods
from cluster.replicas.payload import EncoderPayload, PayloadError

__all__ = ["EncoderPayload", "LOAD_METRIC", "LoadPolicy", "LoadTracker", "POLICY_IMPORT_PATH",
           "PayloadError", "ReplicaCore", "ReplicaMethods"]
