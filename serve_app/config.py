"""The online route's typed configuration: one pydantic model, defaults in one place, passed down.

A pydantic model rather than a dataclass because Ray Serve validates a typed builder's `args` against it
(`serve run serve_app:build_app store=s3://...` or `args:` in config.yaml): a typo is an error at deploy
time, not a silently ignored key.
"""
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from digitiser import MAX_BATCH, ImageLimits, TracingParams

_LIMITS = ImageLimits()
BATCH_WAIT_TIMEOUT_S = 0.05   # longest wait for a batch to fill after its first scan (the one definition)
_CREDENTIAL_OPTIONS = {"key", "secret", "token", "aws_access_key_id", "aws_secret_access_key", "aws_session_token"}
BUSY_WAIT_FRACTION = 0.5      # a busy replica's wait for a fuller batch, as a fraction of a full forward pass


class BatchingConfig(BaseModel):
    """The segmenter's batching knobs: its `user_config`, applied by `reconfigure` without a restart."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(MAX_BATCH, ge=1, le=MAX_BATCH, description="scans per forward batch")
    batch_wait_timeout_s: float = Field(BATCH_WAIT_TIMEOUT_S, ge=0.0, le=10.0,
                                        description="longest wait for a batch to fill after its first scan")
    busy_wait_fraction: float = Field(BUSY_WAIT_FRACTION, ge=0.0, le=2.0,
                                      description="when a batch's worth of requests is inside the replica: the "
                                                  "next batch waits up to this fraction of a full batch's "
                                                  "forward pass to fill (0: always batch_wait_timeout_s)")


class ServeConfig(BaseModel):
    """Everything the online route needs. Deployment options derived from it are set in `build_app`;
    on a cluster, config.yaml's `deployments:` section overrides them (Serve's own precedence)."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    # where results go and which model makes them
    store: str = Field("results/serve", description="results root: folder, file:// or s3://bucket/prefix")
    storage_options: dict[str, Any] = Field(default_factory=dict,
                                            description="fsspec options for the store, e.g. endpoint_url")
    weights: str | None = Field(None, description="segmenter weights (default: the shipped weights)")
    device: str | None = Field(None, description="torch device (default: cuda when num_gpus > 0, else cpu: what Ray "
                                                 "grants, as in the batch job, so both routes compute the same bytes)")
    tracing: dict[str, Any] = Field(default_factory=dict, description="TracingParams overrides")
    auth_token_file: str | None = Field(None, description="file holding the bearer token every route but "
                                                           "/healthz requires (e.g. a mounted secret); None: open")
    loopback_only: bool = Field(False, description="bind replicas' internal servers to 127.0.0.1 "
                                                   "(a single-machine cluster; see loopback.py)")

    # segmenter replicas (the model; batched)
    replicas: int = Field(1, ge=1)
    num_gpus: float = Field(0.0, ge=0.0, description="GPUs per segmenter replica")
    segmenter_num_cpus: float = Field(1.0, ge=0.0, description="CPUs per segmenter replica (torch threads)")
    max_batch_size: int = Field(MAX_BATCH, ge=1, le=MAX_BATCH)
    batch_wait_timeout_s: float = Field(BATCH_WAIT_TIMEOUT_S, ge=0.0, le=10.0)
    busy_wait_fraction: float = Field(BUSY_WAIT_FRACTION, ge=0.0, le=2.0, description="see BatchingConfig")
    segmenter_max_ongoing_requests: int | None = Field(
        None, ge=1, description="per replica; default 2 x max_batch_size so a full batch can form while one runs")
    segmenter_max_queued_requests: int = Field(64, ge=-1, description="per caller; -1 = unbounded")

    # ingress replicas (HTTP, decoding, tracing results to storage)
    ingress_replicas: int = Field(1, ge=1)
    ingress_num_cpus: float = Field(0.5, ge=0.0)
    ingress_max_ongoing_requests: int = Field(64, ge=1, description="uploads held in memory per replica")
    ingress_max_queued_requests: int = Field(128, ge=-1, description="requests the proxy queues; then 503")
    retry_after_s: int = Field(2, ge=0, description="Retry-After on 503 (overload, storage failure)")

    # upload limits
    max_image_bytes: int = Field(_LIMITS.max_bytes, gt=0)
    max_image_pixels: int = Field(_LIMITS.max_pixels, gt=0)
    max_image_side: int = Field(_LIMITS.max_side, gt=0)
    max_calibration_bytes: int = Field(64 * 1024, gt=0)

    @property
    def segmenter_device(self) -> str:
        return self.device or ("cuda" if self.num_gpus > 0 else "cpu")

    @model_validator(mode="after")
    def _check(self):
        credentials = sorted(_CREDENTIAL_OPTIONS & set(self.storage_options))
        if credentials:
            raise ValueError(f"storage_options must not carry credentials ({credentials}): the config is stored and "
                             "shown by Serve; use the standard AWS chain (environment, profile, instance role)")
        ongoing = self.segmenter_ongoing
        if ongoing < self.max_batch_size:
            raise ValueError(f"segmenter_max_ongoing_requests={ongoing} is below max_batch_size="
                             f"{self.max_batch_size}: batches could never fill; use >= 2 x max_batch_size")
        self.limits  # noqa: B018  (ImageLimits checks itself: fail at deploy time, not per request)
        try:
            self.tracing_params  # noqa: B018
        except TypeError as e:
            raise ValueError(f"tracing: {e}; fields: {list(TracingParams.__dataclass_fields__)}") from e
        return self

    @property
    def segmenter_ongoing(self) -> int:
        return self.segmenter_max_ongoing_requests or 2 * self.max_batch_size

    @property
    def limits(self) -> ImageLimits:
        return ImageLimits(self.max_image_bytes, self.max_image_pixels, self.max_image_side)

    @property
    def tracing_params(self) -> TracingParams:
        return TracingParams(**self.tracing)

    @property
    def batching(self) -> BatchingConfig:
        return BatchingConfig(max_batch_size=self.max_batch_size, batch_wait_timeout_s=self.batch_wait_timeout_s,
                              busy_wait_fraction=self.busy_wait_fraction)
