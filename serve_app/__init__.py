"""The online route: an HTTP digitisation endpoint on Ray Serve with batched segmenter replicas.

`build_app(config)` is the typed application builder (config.yaml: `import_path: serve_app:build_app`),
`serve_forever(config, host, port)` runs it on a local, loopback-only Ray (`digitise serve`; `start_local_ray`
alone starts that Ray), `serve_on_cluster(config, address, host, port)` deploys it onto an existing cluster
(`digitise serve --address`), `ServeConfig` holds every knob.
"""
from serve_app.app import build_app, serve_forever, serve_on_cluster, start_local_ray
from serve_app.config import BatchingConfig, ServeConfig

__all__ = ["build_app", "serve_forever", "serve_on_cluster", "start_local_ray", "ServeConfig", "BatchingConfig"]
