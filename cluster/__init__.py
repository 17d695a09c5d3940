"""Where the model runs and how many: the Ray Serve application and its parts.

- `app`: the Serve graph (Gateway -> Scheduler -> replica pools); `build_app` is the application
  builder (`serve run cluster.app:build_app`), `build_application(config)` binds it from a config.
- `serve_config`: `ServeConfig` (serve.yaml), deployment names; `serve_export`: `seal_api_keys`, `export_serve_config`.
- `backend`, `serve_backend`: the `Backend` the gateway talks to (in-process for tests; Serve handles).
- `http/`: the HTTP edge (native, V2, OpenAI). `replicas/`: encoder and generator pools, autoscaling.

Nothing is imported here: `import cluster.http` stays free of Ray.
"""
