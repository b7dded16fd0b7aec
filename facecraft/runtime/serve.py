"""``facecraft serve``: export missing models, run the embedded Triton, then the gateway.

The steps are separate functions so each can be tested on its own; :func:`serve` strings them
together and owns the clean shutdown (Ctrl-C / SIGTERM stop the gateway first, then Triton).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from facecraft.runtime.http_probe import EXITED, OK, wait_for_http_ok
from facecraft.runtime.instance_groups import configure_repository, is_onnx_model
from facecraft.runtime.instance_plan import InstancePlan, plan_instances
from facecraft.runtime.model_config import load_config
from facecraft.runtime.ports import BindAddressError, PortConflictError, PortInUseError, check_ports_free
from facecraft.runtime.server import DEFAULT_RUNTIME_DIR, TritonServer, TritonStartError

GATEWAY_MODULE = "facecraft.gateway"
# `facecraft worker`: runs the shared Redis queue's jobs (FACECRAFT_JOB_BACKEND=redis://...)
WORKER_MODULE = "facecraft.gateway.redis_jobs"
DEFAULT_GATEWAY_PORT = 8080
# How long a SIGTERMed gateway may take before SIGKILL: uvicorn drains requests for 10 s, then
# running async jobs get FACECRAFT_SHUTDOWN_GRACE_S (10 s). A SIGKILL cuts gRPC calls, which can
# crash Triton 2.51 (docs/reliability.md), so it comes only well after both.
GATEWAY_STOP_TIMEOUT_S = 30.0
# An embedded Triton that exits unexpectedly is restarted on the same ports, at most this many
# times within this many seconds; then serve gives up (exit 1). Triton 2.51 can abort under load
# (docs/reliability.md); the gateway answers 503 triton_unavailable meanwhile and queued jobs wait.
TRITON_RESTARTS = 5
TRITON_RESTART_WINDOW_S = 600.0


class ServeError(RuntimeError):
    """A user-facing failure of ``facecraft serve`` (printed as one line by the CLI)."""


def say(message: str) -> None:
    print(f"facecraft serve: {message}", flush=True)


def onnx_models(repo: Path) -> list[str]:
    """Names of the models in ``repo`` served by ONNX Runtime (``ConfigEditError`` for a config that
    does not parse)."""
    return [
        path.parent.name for path in sorted(repo.glob("*/config.pbtxt")) if is_onnx_model(load_config(path))
    ]


def missing_onnx_models(repo: Path) -> list[str]:
    """ONNX models of ``repo`` whose ``1/model.onnx`` has not been exported yet."""
    return [name for name in onnx_models(repo) if not (repo / name / "1" / "model.onnx").is_file()]


def weights_status(repo: Path, name: str) -> dict | None:
    """Contents of ``<repo>/<name>/1/export.json`` (written by ``facecraft export``), or None."""
    try:
        return json.loads((repo / name / "1" / "export.json").read_text())
    except (OSError, ValueError):
        return None


def export_missing(repo: Path, preset: str, weights: str = "auto") -> list[str]:
    """Export every missing ONNX model of ``repo`` (progress shown); return the names exported."""
    missing = missing_onnx_models(repo)
    if not missing:
        return []
    try:
        from facecraft.export.exporter import export_model
        from facecraft.export.models import UnknownModelError
        from facecraft.export.parity import ParityError
        from facecraft.export.weights import WeightsError
    except ImportError as error:
        raise ServeError(
            f"models {', '.join(missing)} are not exported and facecraft.export is unavailable ({error}); "
            "install the `export` extra (make setup) or run `facecraft export all`"
        ) from error
    for name in missing:
        say(f"{name}: no {repo / name / '1' / 'model.onnx'}; exporting (preset {preset}, weights {weights})")
        try:
            export_model(name, preset=preset, weights=weights, repo=repo, progress=True)
        except (UnknownModelError, ParityError, WeightsError) as error:
            raise ServeError(f"exporting {name} failed: {error}") from error
    return missing


def report_weights(repo: Path) -> list[str]:
    """Print each ONNX model's weights provenance; return the models with untrained weights."""
    untrained = []
    for name in onnx_models(repo):
        status = weights_status(repo, name)
        if status is None:
            say(f"{name}: weights provenance unknown (no 1/export.json)")
        elif status.get("trained") is False:
            untrained.append(name)
            say(
                f"WARNING: {name} has UNTRAINED weights (seeded random, seed {status.get('seed', '?')}): "
                "its output is NOT a real result"
            )
        else:
            say(f"{name}: trained weights ({status.get('weights_source', '?')})")
    return untrained


def prepare_repository(repo: Path, runtime_dir: Path, plan: InstancePlan) -> Path:
    """The repository Triton should load: a runtime copy of ``repo`` under
    ``runtime_dir/model_repository`` with the instance groups, ONNX threads and batching of
    ``plan`` (the committed configs are never edited)."""
    output = runtime_dir / "model_repository"
    if output.exists():
        shutil.rmtree(output)
    placements = configure_repository(repo, plan, output=output)
    say(plan.describe())
    for placement in placements:
        if placement.kind:
            say(f"{placement.model}: {placement.describe()}")
    return output


def gateway_available() -> bool:
    """True when ``python -m facecraft.gateway`` exists in this environment."""
    try:
        return importlib.util.find_spec(f"{GATEWAY_MODULE}.__main__") is not None
    except ImportError:
        return False


@dataclass
class GatewayProcess:
    """The gateway (``python -m facecraft.gateway``) as a child process; with ``module`` =
    :data:`WORKER_MODULE`, a ``facecraft worker`` of the Redis job backend (``jobs``)."""

    triton_url: str
    host: str = "0.0.0.0"
    port: int = DEFAULT_GATEWAY_PORT
    log_path: Path | None = None
    # Lets the gateway read each ONNX model's export.json, so /status labels untrained weights.
    model_repository: Path | None = None
    # The runtime copy Triton serves: models downloaded through the gateway are linked into it.
    triton_repository: Path | None = None
    # FACECRAFT_JOB_BACKEND for the child: None leaves the environment's (default local)
    jobs: str | None = None
    module: str = GATEWAY_MODULE
    process: subprocess.Popen | None = field(default=None, init=False)

    def start(self) -> GatewayProcess:
        env = dict(os.environ)
        env.update(
            FACECRAFT_TRITON_URL=self.triton_url, FACECRAFT_HOST=self.host, FACECRAFT_PORT=str(self.port)
        )
        if self.model_repository is not None:
            env["FACECRAFT_MODEL_REPOSITORY"] = str(self.model_repository)
        if self.triton_repository is not None:
            env["FACECRAFT_TRITON_REPOSITORY"] = str(self.triton_repository)
        if self.jobs is not None:
            env["FACECRAFT_JOB_BACKEND"] = self.jobs
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module], env=env, stdin=subprocess.DEVNULL, start_new_session=True
        )
        return self

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def wait_healthy(self, timeout: float = 60.0) -> str:
        """Poll ``/health``: ``http_probe.OK``, ``EXITED`` or ``TIMED_OUT``."""
        return wait_for_http_ok(f"{self.url}/health", self.process, timeout, interval_s=0.5)

    def stop(self, timeout: float = GATEWAY_STOP_TIMEOUT_S) -> int | None:
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        return process.returncode


@dataclass
class ServeOptions:
    repo: Path = Path("model_repository")
    runtime_dir: Path = DEFAULT_RUNTIME_DIR
    triton_only: bool = False
    gateway_only: bool = False
    triton_url: str | None = None
    device: str = "cpu"
    instances: int | None = None
    onnx_threads: int | None = None
    python_instances: int | None = None
    precision: str = "fp32"
    gpu_accelerator: str = "cuda"
    preset: str = "full"
    weights: str = "auto"
    host: str = "0.0.0.0"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    gateway_port: int = DEFAULT_GATEWAY_PORT
    log_verbose: int = 0
    ready_timeout: float = 900.0
    # local, or a Redis URL: the gateway joins that shared queue and, unless gateway_only, serve
    # also starts one `facecraft worker` against the embedded Triton
    jobs: str = "local"


def check_ports(options: ServeOptions) -> None:
    """Raise :class:`ServeError`, before anything starts or is exported, naming every port this run
    must bind (Triton's three unless ``gateway_only``, the gateway's unless ``triton_only``) that is
    already taken, a port given to two roles, or an unusable bind address."""
    ports: dict[str, int] = {}
    hints: dict[str, str] = {}
    if not options.gateway_only:
        for role, port, flag, env in (
            ("Triton HTTP", options.http_port, "--http-port", "FACECRAFT_TRITON_HTTP_PORT"),
            ("Triton gRPC", options.grpc_port, "--grpc-port", "FACECRAFT_TRITON_GRPC_PORT"),
            ("Triton metrics", options.metrics_port, "--metrics-port", "FACECRAFT_TRITON_METRICS_PORT"),
        ):
            ports[role], hints[role] = port, f"{flag} or {env}"
    if not options.triton_only:
        ports["gateway"], hints["gateway"] = options.gateway_port, "--gateway-port or FACECRAFT_PORT"
    try:
        check_ports_free(options.host, ports, hints)
    except (PortInUseError, PortConflictError) as error:
        raise ServeError(str(error)) from error
    except BindAddressError as error:
        raise ServeError(f"{error} (--host or FACECRAFT_HOST)") from error


def check_gateway_settings(options: ServeOptions) -> None:
    """Raise :class:`ServeError` when the gateway this run would start cannot read its settings
    (a bad ``FACECRAFT_*`` variable), before Triton is started for nothing."""
    try:
        from pydantic import ValidationError

        from facecraft.gateway.settings import GatewaySettings, describe_settings_error
    except ImportError:
        return  # no gateway in this installation: serve says so later
    try:
        # Without --gateway-only the URL is the embedded Triton's, known only once it runs: a
        # well-formed stand-in, so that only the operator's own settings are judged here.
        GatewaySettings(host=options.host, port=options.gateway_port, triton_url=options.triton_url or "x:1")
    except ValidationError as error:
        raise ServeError(f"the gateway's settings are invalid: {describe_settings_error(error)}") from None


def redact_url(url: str) -> str:
    """``url`` without its password (``redis://:secret@host`` → ``redis://:***@host``)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _raise_interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


@dataclass
class RestartBudget:
    """At most ``limit`` restarts within any ``window_s`` seconds (times from ``time.monotonic``)."""

    limit: int = TRITON_RESTARTS
    window_s: float = TRITON_RESTART_WINDOW_S
    times: list[float] = field(default_factory=list)

    def allow(self, now: float) -> bool:
        """Count a restart at ``now`` and return True, or False when the budget is spent."""
        self.times = [time_ for time_ in self.times if now - time_ < self.window_s]
        if len(self.times) >= self.limit:
            return False
        self.times.append(now)
        return True


def restart_triton(triton: TritonServer, budget: RestartBudget) -> bool:
    """After Triton exited unexpectedly: show why, and start it again on the same ports when the
    budget allows; False when serve should give up."""
    code = getattr(triton.process, "returncode", None)
    say(f"Triton exited unexpectedly (code {code}); last lines of {triton.log_path}:\n{triton.log_tail(30)}")
    if not budget.allow(time.monotonic()):
        say(f"Triton exited {budget.limit + 1} times within {budget.window_s:.0f} s: giving up")
        return False
    say(
        f"restarting Triton ({len(budget.times)} of at most {budget.limit} restarts in {budget.window_s:.0f} s; "
        "the gateway answers 503 triton_unavailable meanwhile, queued jobs wait)"
    )
    try:
        triton.restart()
    except TritonStartError as error:
        say(f"Triton did not start again: {error}")
        return False
    say("Triton is ready again")
    return True


def _wait_forever(
    triton: TritonServer | None,
    gateway: GatewayProcess | None,
    worker: GatewayProcess | None = None,
    budget: RestartBudget | None = None,
) -> int:
    """Block until the gateway or worker dies, or Triton dies past its restart budget (returns 1),
    or Ctrl-C / SIGTERM (raises KeyboardInterrupt). A Triton that exits is restarted."""
    budget = budget or RestartBudget()
    while True:
        if triton is not None and not triton.is_running() and not restart_triton(triton, budget):
            return 1
        for name, child in (("gateway", gateway), ("job worker", worker)):
            if child is not None and child.process is not None and child.process.poll() is not None:
                say(f"the {name} exited with code {child.process.returncode}")
                return 1
        time.sleep(1.0)


def serve(options: ServeOptions, wait: Callable[..., int] = _wait_forever) -> int:
    """Run the service until interrupted; returns the exit code."""
    # Explicit for both: a shell starting `serve` in the background leaves SIGINT ignored.
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    triton: TritonServer | None = None
    gateway: GatewayProcess | None = None
    worker: GatewayProcess | None = None
    try:
        triton_grpc = options.triton_url
        if options.gateway_only and not triton_grpc:
            raise ServeError(
                "--gateway-only needs Triton's gRPC endpoint: --triton-url HOST:PORT or FACECRAFT_TRITON_URL"
            )
        repo = options.repo.resolve()
        if not options.gateway_only and not any(repo.glob("*/config.pbtxt")):
            raise ServeError(f"{repo} is not a model repository (no */config.pbtxt)")
        if not options.triton_only:
            check_gateway_settings(options)
        check_ports(options)
        if not options.gateway_only:
            runtime_dir = options.runtime_dir.resolve()
            export_missing(repo, options.preset, options.weights)
            report_weights(repo)
            if options.device == "gpu" and not Path("/dev/nvidiactl").exists():
                say(
                    "WARNING: --device gpu but no NVIDIA GPU is visible (/dev/nvidiactl missing): KIND_GPU models will not load"
                )
            plan = plan_instances(
                options.device,
                instances=options.instances,
                onnx_threads=options.onnx_threads,
                python_instances=options.python_instances,
                precision=options.precision,
                gpu_accelerator=options.gpu_accelerator,
            )
            served_repo = prepare_repository(repo, runtime_dir, plan)
            triton = TritonServer(
                served_repo,
                runtime_dir=runtime_dir,
                host=options.host,
                http_port=options.http_port,
                grpc_port=options.grpc_port,
                metrics_port=options.metrics_port,
                log_verbose=options.log_verbose,
                ready_timeout=options.ready_timeout,
            )
            say(f"starting Triton over {served_repo} (log: {triton.log_path})")
            started = time.monotonic()
            triton.start(
                on_wait=lambda elapsed, pending: say(f"waiting for Triton ({elapsed:.0f} s): {pending}")
            )
            say(
                f"Triton ready in {time.monotonic() - started:.0f} s: {', '.join(sorted(triton.model_states()))}"
            )
            say(f"  HTTP    {triton.http_url}")
            say(f"  gRPC    {triton.grpc_url}")
            say(f"  metrics {triton.metrics_url}")
            triton_grpc = triton.grpc_url

        if not options.triton_only:
            if gateway_available():
                gateway = GatewayProcess(
                    triton_url=triton_grpc,
                    host=options.host,
                    port=options.gateway_port,
                    model_repository=None if options.gateway_only else repo,
                    triton_repository=None if options.gateway_only else served_repo,
                    jobs=options.jobs,
                )
                gateway.start()
                health = gateway.wait_healthy()
                if health == OK:
                    say(f"gateway ready: {gateway.url} (Triton gRPC {triton_grpc})")
                elif health == EXITED:
                    raise ServeError(
                        f"the gateway exited during start-up with code {gateway.process.returncode} "
                        "(see its output above)"
                    )
                else:
                    say(f"gateway started at {gateway.url} but /health has not answered yet")
            elif options.gateway_only:
                raise ServeError(f"the gateway module {GATEWAY_MODULE} is not installed")
            else:
                say(
                    f"the gateway ({GATEWAY_MODULE}) is not available in this installation; Triton keeps running"
                )
            if options.jobs != "local" and not options.gateway_only and gateway is not None:
                worker = GatewayProcess(triton_url=triton_grpc, jobs=options.jobs, module=WORKER_MODULE)
                worker.start()
                say(f"job worker started on the shared queue {redact_url(options.jobs)}")
            elif options.jobs != "local":
                say(f"gateway joined the shared job queue {redact_url(options.jobs)} (no local worker)")
        say("press Ctrl-C to stop")
        return wait(triton, gateway, worker) if worker is not None else wait(triton, gateway)
    except KeyboardInterrupt:
        say("stopping")
        return 0
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        if gateway is not None:
            gateway.stop()
        if worker is not None:
            worker.stop()
        if triton is not None and triton.process is not None:
            code = triton.stop()
            say(f"Triton stopped (exit code {code})")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
