"""``facecraft serve`` and ``facecraft repo configure``."""

from __future__ import annotations

import argparse
from pathlib import Path

from facecraft.cli import ENV_PRECEDENCE, CliError, env_argument

DEVICE_CHOICES = ("cpu", "gpu")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _positive(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _host(text: str) -> str:
    value = text.strip()
    if not value:
        raise argparse.ArgumentTypeError("must not be empty (0.0.0.0 listens on every interface)")
    return value


def _triton_url(text: str) -> str:
    from facecraft.runtime.ports import check_host_port

    try:
        return check_host_port(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{error}, got {text!r}") from None


def _port(text: str) -> int:
    value = _integer(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port (1-65535): {value}")
    return value


def add_instance_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """``--instances`` / ``--onnx-threads`` / ``--python-instances`` (facecraft.runtime.instance_plan)."""
    env_argument(
        parser,
        "--instances",
        env="FACECRAFT_INSTANCES",
        default=None,
        type=_positive,
        help="instances per ONNX model (none: from the usable cores; CPU 2 up to 4, GPU 1)",
    )
    env_argument(
        parser,
        "--onnx-threads",
        env="FACECRAFT_ONNX_THREADS",
        default=None,
        type=_positive,
        help="onnxruntime intra-op threads per ONNX instance (none: on CPU cores / instances)",
    )
    env_argument(
        parser,
        "--python-instances",
        env="FACECRAFT_PYTHON_INSTANCES",
        default=None,
        type=_positive,
        help="instances per Python model (none: committed count, or cores / 4 from 8 cores)",
    )
    env_argument(
        parser,
        "--precision",
        env="FACECRAFT_PRECISION",
        default="fp32",
        help="precision the ONNX models are served at: fp32, int8 (CPU), fp16 (GPU), or per model "
        "(u2net=int8,codeformer=fp32); needs `facecraft export MODEL --precision P` (docs/export.md)",
    )
    env_argument(
        parser,
        "--gpu-accelerator",
        env="FACECRAFT_GPU_ACCELERATOR",
        default="cuda",
        help="GPU plans: cuda (onnxruntime CUDA execution provider; the embedded runtime) or tensorrt "
        "(ONNX Runtime TensorRT accelerator, FP16, engine cache; Triton's native backend, NGC container)",
    )


def _job_backend(value: str) -> str:
    value = value.strip()
    if value == "local" or value.startswith(("redis://", "rediss://", "unix://")):
        return value
    raise argparse.ArgumentTypeError(f"{value!r} is not 'local' or a Redis URL (redis://host:port/db)")


def register(subparsers) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run the embedded Triton server (and the gateway)",
        description=(
            "Export missing ONNX models, start the embedded Triton (nvidia-pytriton wheel) over the "
            "model repository, wait until every model is READY, then start the gateway "
            "(python -m facecraft.gateway). Ctrl-C stops both. Every port is checked before "
            "anything starts. " + ENV_PRECEDENCE
        ),
    )
    mode = serve.add_mutually_exclusive_group()
    mode.add_argument("--triton-only", action="store_true", help="run Triton only, no gateway")
    mode.add_argument(
        "--gateway-only", action="store_true", help="run the gateway only, against --triton-url"
    )
    env_argument(
        serve,
        "--triton-url",
        env="FACECRAFT_TRITON_URL",
        default=None,
        type=_triton_url,
        help="Triton gRPC HOST:PORT, with --gateway-only only (the variable is ignored without it, "
        "with a note: the gateway then uses the embedded Triton)",
    )
    serve.add_argument("--repo", type=Path, default=Path("model_repository"), help="model repository")
    serve.add_argument(
        "--runtime-dir",
        type=Path,
        default=Path(".facecraft"),
        help="backends, logs and generated repository copies (default .facecraft)",
    )
    serve.add_argument(
        "--device",
        choices=DEVICE_CHOICES,
        default="cpu",
        help="instance kind of the ONNX models (default cpu)",
    )
    add_instance_plan_arguments(serve)
    serve.add_argument(
        "--preset",
        choices=("full", "tiny"),
        default="full",
        help="preset for models that must be exported first (default full: the real sizes, about 10-15 "
        "minutes of export on 2 cores the first time; tiny: small test models)",
    )
    serve.add_argument(
        "--weights",
        choices=("auto", "official", "random"),
        default="auto",
        help="weights for models that must be exported first (default auto: official, else seeded random)",
    )
    env_argument(
        serve,
        "--host",
        env="FACECRAFT_HOST",
        default="0.0.0.0",
        type=_host,
        help="bind address for Triton and the gateway",
    )
    env_argument(
        serve,
        "--http-port",
        env="FACECRAFT_TRITON_HTTP_PORT",
        default=8000,
        type=_port,
        help="Triton HTTP port",
    )
    env_argument(
        serve,
        "--grpc-port",
        env="FACECRAFT_TRITON_GRPC_PORT",
        default=8001,
        type=_port,
        help="Triton gRPC port",
    )
    env_argument(
        serve,
        "--metrics-port",
        env="FACECRAFT_TRITON_METRICS_PORT",
        default=8002,
        type=_port,
        help="Triton metrics port",
    )
    env_argument(serve, "--gateway-port", env="FACECRAFT_PORT", default=8080, type=_port, help="gateway port")
    env_argument(
        serve,
        "--jobs",
        env="FACECRAFT_JOB_BACKEND",
        default="local",
        type=_job_backend,
        help="async job backend: local (in the gateway) or a Redis URL (redis://host:6379/0): the "
        "gateway joins that shared queue and, without --gateway-only, a `facecraft worker` starts too",
    )
    serve.add_argument("--log-verbose", type=int, default=0, help="Triton --log-verbose level")
    serve.add_argument(
        "--ready-timeout", type=float, default=900.0, help="seconds to wait for every model to be READY"
    )
    serve.set_defaults(func=run_serve)

    repo = subparsers.add_parser("repo", help="model repository tools")
    repo_commands = repo.add_subparsers(dest="repo_command", metavar="ACTION")
    configure = repo_commands.add_parser(
        "configure",
        help="rewrite instance groups (and ONNX threads/batching) for a CPU or GPU host",
        epilog=ENV_PRECEDENCE,
        description=(
            "Rewrite each model's instance_group for this host (docs/runtime.md, instance plans): "
            "KIND_CPU everywhere on CPU hosts, with intra_op_thread_count and one image per "
            "execution for the ONNX models; KIND_GPU for the ONNX models on GPU hosts (Python models "
            "stay KIND_CPU). Ensembles are left alone."
        ),
    )
    configure.add_argument("--repo", type=Path, default=Path("model_repository"))
    configure.add_argument("--device", choices=DEVICE_CHOICES, required=True)
    add_instance_plan_arguments(configure)
    configure.add_argument(
        "--output",
        type=Path,
        help="write a runtime copy here instead of editing --repo in place (configs the plan changes "
        "are rewritten in canonical text format, without their comments)",
    )
    configure.set_defaults(func=run_repo_configure)
    repo.set_defaults(func=lambda _args: repo.print_help() or 2)


def run_repo_configure(args: argparse.Namespace) -> int:
    from facecraft.runtime.instance_groups import ConfigEditError, configure_repository
    from facecraft.runtime.instance_plan import InstancePlanError, plan_instances

    if not any(args.repo.glob("*/config.pbtxt")):
        raise CliError(f"{args.repo} is not a model repository (no */config.pbtxt)")
    if args.output is not None and args.output.exists():
        raise CliError(f"--output {args.output} already exists")
    try:
        plan = plan_instances(
            args.device,
            instances=args.instances,
            onnx_threads=args.onnx_threads,
            python_instances=args.python_instances,
            precision=args.precision,
            gpu_accelerator=args.gpu_accelerator,
        )
        placements = configure_repository(args.repo, plan, output=args.output)
    except (ConfigEditError, InstancePlanError) as error:
        raise CliError(str(error)) from error
    print(plan.describe())
    for placement in placements:
        print(f"{placement.model:16s} {placement.describe()}")
    print(f"configured {args.output or args.repo} for {args.device}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from facecraft.runtime.backends import BackendAssemblyError
    from facecraft.runtime.discovery import TritonNotFoundError
    from facecraft.runtime.instance_groups import ConfigEditError
    from facecraft.runtime.instance_plan import InstancePlanError
    from facecraft.runtime.serve import ServeError, ServeOptions, serve
    from facecraft.runtime.server import TritonStartError

    if args.gateway_only and not args.triton_url:
        raise CliError(
            "--gateway-only needs Triton's gRPC endpoint: --triton-url HOST:PORT or FACECRAFT_TRITON_URL"
        )
    if args.triton_url and not args.gateway_only:
        if "triton_url" not in getattr(args, "from_environment", {}):
            raise CliError("--triton-url only goes with --gateway-only")
        print(
            f"facecraft serve: FACECRAFT_TRITON_URL={args.triton_url} is ignored: "
            "the gateway uses the embedded Triton (--gateway-only to use another)",
            flush=True,
        )
        args.triton_url = None
    options = ServeOptions(
        repo=args.repo,
        runtime_dir=args.runtime_dir,
        triton_only=args.triton_only,
        gateway_only=args.gateway_only,
        triton_url=args.triton_url,
        device=args.device,
        instances=args.instances,
        onnx_threads=args.onnx_threads,
        python_instances=args.python_instances,
        precision=args.precision,
        gpu_accelerator=args.gpu_accelerator,
        preset=args.preset,
        weights=args.weights,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        gateway_port=args.gateway_port,
        log_verbose=args.log_verbose,
        ready_timeout=args.ready_timeout,
        jobs=args.jobs,
    )
    try:
        return serve(options)
    except (
        ServeError,
        TritonStartError,
        TritonNotFoundError,
        BackendAssemblyError,
        ConfigEditError,
        InstancePlanError,
    ) as error:
        raise CliError(str(error), exit_code=1) from error
