"""Gateway settings, read from ``FACECRAFT_*`` environment variables (see docs/api.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from facecraft.runtime.ports import check_host_port


class GatewaySettings(BaseSettings):
    """Every knob of the gateway. Env var = ``FACECRAFT_`` + field name in upper case."""

    model_config = SettingsConfigDict(env_prefix="FACECRAFT_", extra="ignore")

    host: str = "0.0.0.0"
    port: int = Field(8080, ge=0, le=65535)
    log_level: str = "info"

    triton_url: str = Field("localhost:8001", description="Triton gRPC endpoint, host:port")
    triton_timeout_s: float = Field(120.0, gt=0, description="per-inference timeout")
    model_repository: Path | None = Field(
        None, description="the Triton model repository, to read export.json (trained/untrained)"
    )
    triton_repository: Path | None = Field(
        None,
        description="the folder Triton serves when it is a runtime copy of model_repository "
        "(facecraft serve); downloaded models are linked into it (default: model_repository)",
    )
    admin_routes: bool = Field(
        True, description="model download/load/unload routes; false answers 403 admin_disabled"
    )
    recover_unhealthy_stubs: bool = Field(
        True,
        description="reload a model at once when Triton declares one of its Python stubs unhealthy "
        "(Triton 2.51 would otherwise give its next request a stale answer or abort: docs/reliability.md)",
    )

    # Processing defaults (the Facecraft contract).
    default_width: int = Field(648, ge=64, le=4096)
    default_height: int = Field(648, ge=64, le=4096)
    default_background: Annotated[tuple[int, int, int], NoDecode] = (240, 240, 240)
    default_face_margin: float = Field(0.3, ge=0.0, le=2.0)
    default_use_oval_mask: bool = True
    default_enhance_face: bool = True
    default_enhance_fidelity: float = Field(0.7, ge=0.0, le=1.0)
    default_max_jpeg_kb: int = Field(200, ge=8, le=10240)

    # Limits.
    max_upload_mb: float = Field(20.0, gt=0)
    max_image_pixels: int = Field(50_000_000, gt=0)
    # Video uploads (docs/video.md): checked by facecraft.pipeline.video.probe_video.
    video_max_mb: float = Field(512.0, gt=0, description="video upload cap")
    video_max_duration_s: float = Field(600.0, gt=0, description="video duration cap (frames / fps)")
    video_max_frames: int = Field(36_000, ge=1, description="video frame-count cap")
    video_max_frame_pixels: int = Field(3840 * 2160, ge=1, description="width x height cap of one frame")
    video_max_in_flight: int = Field(
        8, ge=1, description="frames of one video job between decode and encode (bounds its memory)"
    )
    batch_max_files: int = Field(50, ge=1)
    max_concurrent_jobs: int = Field(4, ge=1, description="Triton inferences in flight at once")
    queue_wait_s: float = Field(
        2.0, ge=0, description="how long a synchronous request waits for a free slot before 503"
    )
    job_workers: int = Field(2, ge=1, description="async job worker tasks")
    job_max_attempts: int = Field(
        6,
        ge=1,
        description="tries per async job while Triton is down (waits doubling from retry_after_s, at most 60 s)",
    )
    shutdown_grace_s: float = Field(
        10.0,
        ge=0,
        description="how long a stopping gateway lets running async jobs finish before cutting them off",
    )
    max_queued_jobs: int = Field(
        256, ge=1, description="async jobs waiting at once; more are refused with 503 server_busy"
    )

    # Job backend (docs/deploy.md "Jobs across machines").
    job_backend: str = Field(
        "local",
        description="local (the in-process queue) or a Redis URL (redis://host:6379/0): a shared "
        "SAQ queue worked by `facecraft worker` processes",
    )
    job_timeout_s: float = Field(
        600.0, ge=1, description="per-attempt limit of a portrait job (both backends)"
    )
    job_heartbeat_s: float = Field(
        30.0, ge=1, description="a running job silent this long is handed to another worker (Redis backend)"
    )
    video_job_timeout_s: float = Field(
        6 * 3600.0, ge=1, description="per-attempt limit of a video job (both backends)"
    )
    video_job_heartbeat_s: float = Field(
        120.0, ge=1, description="the heartbeat interval of a video job (Redis backend)"
    )
    job_sweep_s: float = Field(
        10.0, ge=1, description="how often workers look for abandoned jobs (Redis backend)"
    )
    worker_metrics_port: int = Field(
        0, ge=0, le=65535, description="`facecraft worker`: Prometheus /metrics port (0: none)"
    )

    # Storage.
    output_dir: Path = Path("outputs")
    cleanup_age_hours: float = Field(24.0, gt=0)
    cleanup_interval_s: float = Field(600.0, gt=0)

    # Security and health.
    api_key: SecretStr | None = None
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    ready_cache_s: float = Field(5.0, ge=0, description="how long a readiness probe result is reused")
    # Operator switch (e.g. face swapping off): comma-separated processor names, absent from
    # GET /api/v1/processors and answered 403 processor_disabled (docs/processors.md).
    disabled_processors: Annotated[tuple[str, ...], NoDecode] = ()
    retry_after_s: int = Field(5, ge=1, description="Retry-After sent with 503 responses")

    @field_validator("default_background", mode="before")
    @classmethod
    def _parse_background(cls, value):
        if isinstance(value, str):
            parts = [part.strip() for part in value.split(",") if part.strip()]
            if len(parts) != 3:
                raise ValueError("default_background must be three integers 'R,G,B'")
            value = tuple(int(part) for part in parts)
        value = tuple(value)
        if len(value) != 3 or not all(0 <= int(channel) <= 255 for channel in value):
            raise ValueError("default_background must be three integers in 0..255")
        return value

    @field_validator("triton_url")
    @classmethod
    def _check_triton_url(cls, value: str) -> str:
        return check_host_port(value)

    @field_validator("job_backend")
    @classmethod
    def _check_job_backend(cls, value: str) -> str:
        value = value.strip()
        if value == "local" or value.startswith(("redis://", "rediss://", "unix://")):
            return value
        raise ValueError("must be 'local' or a Redis URL (redis://host:port/db, rediss://, unix://)")

    @property
    def uses_redis(self) -> bool:
        return self.job_backend != "local"

    @field_validator("disabled_processors", mode="before")
    @classmethod
    def _parse_disabled_processors(cls, value):
        from facecraft import processors as registry

        names = [part.strip() for part in value.split(",")] if isinstance(value, str) else list(value)
        names = tuple(name for name in names if name)
        unknown = [name for name in names if name not in registry.PROCESSORS]
        if unknown:
            raise ValueError(
                f"disabled_processors: unknown processor(s) {', '.join(unknown)}; valid: {', '.join(registry.names())}"
            )
        return names

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _parse_origins(cls, value):
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value):
        return None if value in ("", None) else value

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def video_limits(self):
        """The ``FACECRAFT_VIDEO_*`` caps as a :class:`facecraft.pipeline.video.VideoLimits`."""
        from facecraft.pipeline.video import VideoLimits  # PyAV loads only when video is used

        return VideoLimits(
            max_bytes=int(self.video_max_mb * 1024 * 1024),
            max_duration_s=self.video_max_duration_s,
            max_frames=self.video_max_frames,
            max_frame_pixels=self.video_max_frame_pixels,
        )

    @property
    def cleanup_age_s(self) -> float:
        return self.cleanup_age_hours * 3600.0


def describe_settings_error(error: ValidationError) -> str:
    """One line per bad setting of a :class:`GatewaySettings` ``ValidationError``:
    ``FACECRAFT_PORT='abc': Input should be a valid integer``."""
    lines = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem.get("loc", ())) or "?"
        given = problem.get("input")
        shown = "" if isinstance(given, dict) else f"={given!r}"
        lines.append(f"FACECRAFT_{field.upper()}{shown}: {problem.get('msg', 'invalid')}")
    return "; ".join(lines)
