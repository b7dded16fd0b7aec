"""Benchmark report: the JSON document (``build_report``) and its Markdown rendering (``render_markdown``)."""

from __future__ import annotations

import statistics
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from facecraft.bench.probes import DISTURBED_SPREAD, ratio_spread, summary

# 4: end_to_end_over_roofline against the probes around its scenario; paired ratios; model bound.
# 5: MACs counted with symbolic shape inference (CodeFormer 404.8 GMAC, not 337.1); the harness's
#    own notes kept apart (measurement_notes) from the ones generated here.
REPORT_VERSION = 5
MODEL_OF = {"codeformer": "codeformer", "u2net": "u2net"}


def _best(scenarios: list[dict], name: str, enhance: bool) -> dict | None:
    candidates = [s for s in scenarios if s["scenario"] == name and s["enhance"] == enhance and s["ok"] > 0]
    return max(candidates, key=lambda s: s["images_per_s"]) if candidates else None


def _at(scenarios: list[dict], name: str, enhance: bool, concurrency: int) -> dict | None:
    for s in scenarios:
        if (
            s["scenario"] == name
            and s["enhance"] == enhance
            and s["concurrency"] == concurrency
            and s["ok"] > 0
        ):
            return s
    return None


# the rule of the roofline ratios, stated in the probe note after the probe values
PROBE_RULE_NOTE = (
    "; each end_to_end_over_roofline ratio divides by the roofline at the higher of the two probes "
    "around its scenario (end_to_end_over_max_probe_roofline: at the highest of the run)"
)
# what build_report writes itself, from the measurements; a report of version 4 or older mixed them
# with the harness's notes, and rebuild strips them by these beginnings
GENERATED_NOTE_PREFIXES = (
    "UNTRAINED",
    "GPU not measured",
    "roofline and GFLOP/s",
    "conv probe GFLOP/s at the start",
    "triton_c",
)


def _window_gflops(samples: list[dict], scenario: dict, fallback: float) -> float:
    """The conv throughput in the minutes of ``scenario``: the higher of the probes before and
    after it (``probe_window``) — it follows the machine's drift over a run, and one low probe (a
    momentary burst) cannot inflate the ratio it divides; ``fallback`` for a record without one."""
    window = scenario.get("probe_window")
    if not window or not samples:
        return fallback
    return max(samples[window[0]]["gflops"], samples[window[1]]["gflops"])


def _pairs(scenarios: list[dict], enhance: bool) -> list[tuple[dict, dict]]:
    """(triton, sequential) records of each paired round (``pair``) of ``enhance``, in round order."""

    def of(name: str) -> dict[int, dict]:
        return {
            s["pair"]: s
            for s in scenarios
            if s["scenario"] == name and s.get("pair") is not None and s["enhance"] == enhance and s["ok"] > 0
        }

    triton, sequential = of("triton_grpc"), of("sequential")
    return [(triton[k], sequential[k]) for k in sorted(triton) if k in sequential]


def _ratio(numerator: dict | None, denominator: dict | None) -> float | None:
    if not numerator or not denominator or denominator["images_per_s"] <= 0:
        return None
    return numerator["images_per_s"] / denominator["images_per_s"]


def build_report(
    *,
    config,
    started_at: datetime,
    machine: dict,
    probe,
    probe_samples: list[dict] | None = None,
    records: dict[str, dict],
    macs: dict[str, float],
    photos: list[str],
    scenarios: list[dict],
    instance_plan,
    model_bound: dict | None = None,
    rss: dict[str, dict[str, float]],
    notes: list[str],
    reference_gmac: dict[str, float],
) -> dict:
    """The whole report as a JSON-serialisable dict (see docs/benchmarks.md for the fields)."""
    models = {}
    for name, count in macs.items():
        record = records.get(name, {})
        models[name] = {
            "gmac_per_image": count / 1e9,
            "reference_gmac_full": reference_gmac.get(name),
            "trained": record.get("trained"),
            "preset": record.get("preset", config.preset),
            "weights": record.get("weights") or record.get("weights_source"),
        }
    # Achieved model throughput from Triton's compute_infer time during each Triton/gateway scenario.
    model_throughput = []
    for s in scenarios:
        for delta in s.get("triton_models", []):
            gmac = models.get(delta["model"], {}).get("gmac_per_image")
            if not gmac or delta["compute_infer_s_total"] <= 0:
                continue
            gflops = 2 * gmac * delta["inferences"] / delta["compute_infer_s_total"]
            # all instances together over the scenario's wall time: what the machine delivered
            gflops_wall = 2 * gmac * delta["inferences"] / s["wall_s"] if s.get("wall_s") else None
            model_throughput.append(
                {
                    "scenario": s["scenario"],
                    "plan": s.get("plan"),
                    "enhance": s["enhance"],
                    "concurrency": s["concurrency"],
                    "model": delta["model"],
                    "avg_batch_size": delta["avg_batch_size"],
                    "gflops_achieved": gflops,
                    "fraction_of_probe": gflops / probe.gflops if probe.gflops else None,
                    "gflops_over_wall": gflops_wall,
                    "wall_fraction_of_probe": gflops_wall / probe.gflops
                    if gflops_wall and probe.gflops
                    else None,
                }
            )
    roofline = {}
    for enhance in (True, False):
        gmac = models.get("u2net", {}).get("gmac_per_image", 0.0) + (
            models.get("codeformer", {}).get("gmac_per_image", 0.0) if enhance else 0.0
        )
        roofline["enhanced" if enhance else "basic"] = {
            "gmac_per_image": gmac,
            "images_per_s": probe.gflops / (2 * gmac) if gmac else None,
        }
    plan_labels = list(getattr(config, "plans", None) or ("auto",))
    all_scenarios = scenarios
    # the ratios compare against the first instance plan; the others are in plan_comparison
    scenarios = [s for s in all_scenarios if s.get("plan") in (None, plan_labels[0])]
    samples = probe_samples or [{"label": "run", "gflops": probe.gflops}]
    ratios, spans, paired, paired_spreads = {}, {}, {}, {}
    top = max(config.concurrency)
    for enhance, label in ((True, "enhanced"), (False, "basic")):
        key = f"triton_c{top}_over_sequential_{label}"
        pairs = _pairs(scenarios, enhance)
        if pairs:
            # each round's ratio from the same minutes; the headline is their median
            values = [_ratio(triton, sequential) for triton, sequential in pairs]
            spreads = [ratio_spread(samples, triton, sequential) for triton, sequential in pairs]
            paired[key] = {
                "rounds": [
                    {
                        "pair": t["pair"],
                        "triton_images_per_s": t["images_per_s"],
                        "sequential_images_per_s": q["images_per_s"],
                        "ratio": v,
                        "probe_spread": sp,
                    }
                    for (t, q), v, sp in zip(pairs, values, spreads, strict=True)
                ],  # fmt: skip
                "min": min(values),
                "median": statistics.median(values),
                "max": max(values),
            }
            ratios[key] = statistics.median(values)
            # the probe spread of a paired ratio: its worst round's
            paired_spreads[key] = max((sp for sp in spreads if sp is not None), default=None)
        else:
            sequential = _best(scenarios, "sequential", enhance)  # the faster pass: the conservative baseline
            triton_top = _at(scenarios, "triton_grpc", enhance, top)
            ratios[key] = _ratio(triton_top, sequential)
            spans[key] = (triton_top, sequential)
        for c in config.concurrency:
            gateway, grpc = (
                _at(scenarios, "gateway_http", enhance, c),
                _at(scenarios, "triton_grpc", enhance, c),
            )
            ratios[f"gateway_over_grpc_c{c}_{label}"] = _ratio(gateway, grpc)
            spans[f"gateway_over_grpc_c{c}_{label}"] = (gateway, grpc)
        gmac = roofline["enhanced" if enhance else "basic"]["gmac_per_image"]
        # against the roofline of the probes around each Triton scenario (the same minutes)
        served = []
        for s in scenarios:
            if s["scenario"] == "triton_grpc" and s["enhance"] == enhance and s["ok"] > 0:
                window = _window_gflops(samples, s, probe.gflops)
                served.append((s["images_per_s"] * 2 * gmac / window, s, window))
        best_window = max(served, key=lambda item: item[0]) if served and gmac else None
        ratios[f"end_to_end_over_roofline_{label}"] = best_window[0] if best_window else None
        spans[f"end_to_end_over_roofline_{label}"] = (best_window[1],) if best_window else (None,)
        if best_window:
            _, scenario, window = best_window
            roofline["enhanced" if enhance else "basic"]["best_scenario"] = {
                "concurrency": scenario["concurrency"],
                "pair": scenario.get("pair"),
                "images_per_s": scenario["images_per_s"],
                "probe_gflops": window,
            }
        best = _best(scenarios, "triton_grpc", enhance)
        bound = roofline["enhanced" if enhance else "basic"]["images_per_s"]
        ratios[f"end_to_end_over_max_probe_roofline_{label}"] = (
            best["images_per_s"] / bound if best and bound else None
        )
        spans[f"end_to_end_over_max_probe_roofline_{label}"] = (best,)
    if model_bound:
        # what the ONNX models reach alone (one session each, the plan's threads), times the plan's
        # instances: the bound a serving cannot beat whatever its overheads
        seconds = model_bound["seconds_per_image"]
        model_bound = {**model_bound, "images_per_s": {}}
        for enhance, label in ((True, "enhanced"), (False, "basic")):
            total = seconds.get("u2net", 0.0) + (seconds.get("codeformer", 0.0) if enhance else 0.0)
            bound_images = model_bound["instances"] / total if total else None
            model_bound["images_per_s"][label] = bound_images
            best = _best(scenarios, "triton_grpc", enhance)
            key = f"end_to_end_over_model_bound_{label}"
            ratios[key] = best["images_per_s"] / bound_images if best and bound_images else None
            spans[key] = (best, model_bound)
    ratio_spreads: dict[str, float | None] = {}
    for key, value in ratios.items():
        if value is None:
            ratio_spreads[key] = None
        elif key in paired_spreads:
            ratio_spreads[key] = paired_spreads[key]
        else:
            ratio_spreads[key] = ratio_spread(samples, *spans[key])
    plan_comparison = []
    for label in plan_labels[1:]:
        others = [s for s in all_scenarios if s.get("plan") == label]
        for enhance in (True, False):
            for c in config.concurrency:
                mine, reference = (
                    _at(others, "triton_grpc", enhance, c),
                    _at(scenarios, "triton_grpc", enhance, c),
                )
                value = _ratio(mine, reference)
                spread = ratio_spread(samples, mine, reference) if value is not None else None
                plan_comparison.append(
                    {
                        "plan": label,
                        "over": plan_labels[0],
                        "enhance": enhance,
                        "concurrency": c,
                        "images_per_s": mine["images_per_s"] if mine else None,
                        "reference_images_per_s": reference["images_per_s"] if reference else None,
                        "ratio": value,
                        "probe_spread": spread,
                        "disturbed": spread is not None and spread > DISTURBED_SPREAD,
                    }
                )
    untrained = [name for name, m in models.items() if m["trained"] is not True]
    report_notes = list(notes)
    if probe_samples:
        report_notes.append(
            "conv probe GFLOP/s at the start, after every scenario and at the end: "
            + ", ".join(f"{s['gflops']:.0f}" for s in probe_samples)
            + PROBE_RULE_NOTE
        )
    if paired:
        rounds = max(len(entry["rounds"]) for entry in paired.values())
        report_notes.append(
            f"triton_c{top}_over_sequential: the median of {rounds} paired rounds "
            "(a sequential pass right before Triton at that concurrency, same minutes); the start and end "
            "passes are kept for the record"
        )
    if untrained:
        report_notes.append(
            f"UNTRAINED weights (seeded random) for: {', '.join(untrained)} — timings are valid, outputs are not real restorations"
        )
    if config.preset != "full":
        report_notes.append("roofline and GFLOP/s are only meaningful at the full preset")
    if config.device == "cpu":
        report_notes.append(
            "GPU not measured in this run; on a GPU machine run: facecraft bench --preset full --device gpu"
        )
    return {
        "report_version": REPORT_VERSION,
        "timestamp": started_at.isoformat(),
        "preset": config.preset,
        "device": config.device,
        "quick": config.quick,
        "requests_per_scenario": config.requests,
        "enhanced_requests_per_scenario": getattr(config, "enhanced_requests", None) or config.requests,
        "concurrency": list(config.concurrency),
        "machine": machine,
        "instance_plan": {**asdict(instance_plan), "description": instance_plan.describe()},
        "conv_probe": asdict(probe),
        "conv_probe_series": {
            **summary([s["gflops"] for s in samples]),
            "threshold": DISTURBED_SPREAD,
            "samples": list(samples),
        },
        "models": models,
        "photos": photos,
        "scenarios": all_scenarios,
        "model_throughput": model_throughput,
        "roofline": roofline,
        "model_bound": model_bound,
        "ratios": ratios,
        "paired_ratios": paired,
        "plans": plan_labels,
        "plan_comparison": plan_comparison,
        "ratio_probe_spread": ratio_spreads,
        "disturbed_ratios": sorted(
            k for k, v in ratio_spreads.items() if v is not None and v > DISTURBED_SPREAD
        ),
        "peak_rss_mib": {
            group: {"processes": values, "total": round(sum(values.values()), 1)}
            for group, values in rss.items()
        },
        "notes": report_notes,
        # the harness's own notes, without the generated ones: what rebuild starts from
        "measurement_notes": list(notes),
    }


def rebuild(json_path: Path, model_repository: Path | None = None) -> tuple[Path, Path]:
    """Recompute the ratios of a saved ``facecraft bench`` report (``<stem>.json``) with this
    module's rules, from its own scenarios, probes, models and notes, and rewrite ``<stem>.json``
    and ``<stem>.md`` in place (the measurements are not touched). Returns (md, json) paths.

    ``model_repository``: count each ONNX model's MACs again from ``<repo>/<model>/1/model.onnx``
    (the same export the report timed) instead of taking the report's. Raises ``ValueError`` for a
    report of version 4 or older without it: those counted CodeFormer at 337.1 of its 404.8 GMAC.
    """
    import json
    from types import SimpleNamespace

    from facecraft.bench.machine import ConvProbe, count_onnx_macs
    from facecraft.client.batch import write_atomically
    from facecraft.runtime.instance_plan import InstancePlan

    old = json.loads(Path(json_path).read_text())
    models = old["models"]
    notes = old.get("measurement_notes")
    if notes is None:  # version 4 or older: strip what build_report writes again
        notes = [n for n in old["notes"] if not n.startswith(GENERATED_NOTE_PREFIXES)]
    if model_repository is not None:
        macs = {name: count_onnx_macs(Path(model_repository) / name / "1" / "model.onnx") for name in models}
        notes = [n for n in notes if not n.startswith("GMAC recounted")]
        notes.append(
            f"GMAC recounted from {model_repository} by facecraft bench --rebuild-report (report version "
            f"{old.get('report_version')}: " + ", ".join(f"{n} {m['gmac_per_image']:.1f}" for n, m in models.items())
            + " before)"
        )  # fmt: skip
    elif old.get("report_version", 0) < 5:
        raise ValueError(
            f"report version {old.get('report_version')} counted MACs with onnx's own shape inference, "
            "which undercounts CodeFormer (337.1 of 404.8 GMAC): count them again from the repository "
            "it timed (facecraft bench --rebuild-report JSON --repo DIR)"
        )
    else:
        macs = {name: m["gmac_per_image"] * 1e9 for name, m in models.items()}
    plan = old["instance_plan"]
    config = SimpleNamespace(
        preset=old["preset"], device=old["device"], quick=old["quick"], requests=old["requests_per_scenario"],
        enhanced_requests=old["enhanced_requests_per_scenario"], concurrency=old["concurrency"],
        plans=tuple(old.get("plans") or ("auto",)),
    )  # fmt: skip
    report = build_report(
        config=config,
        started_at=datetime.fromisoformat(old["timestamp"]),
        machine=old["machine"],
        probe=ConvProbe(**old["conv_probe"]),
        probe_samples=old["conv_probe_series"]["samples"],
        records={name: {"trained": m["trained"], "preset": m["preset"], "weights": m["weights"]} for name, m in models.items()},
        macs=macs,
        photos=old["photos"],
        scenarios=[{**s, "probe_window": tuple(s["probe_window"])} if s.get("probe_window") else s for s in old["scenarios"]],
        instance_plan=InstancePlan(
            **{k: tuple(map(tuple, v)) if k in ("precisions", "overrides") else v
               for k, v in plan.items() if k != "description"}
        ),  # fmt: skip
        model_bound={k: v for k, v in old["model_bound"].items() if k != "images_per_s"} if old.get("model_bound") else None,
        rss={group: values["processes"] for group, values in old["peak_rss_mib"].items()},
        notes=notes,
        reference_gmac={name: m["reference_gmac_full"] for name, m in models.items()},
    )  # fmt: skip
    json_path = Path(json_path)
    md_path = json_path.with_suffix(".md")
    write_atomically(json_path, json.dumps(report, indent=2).encode())
    write_atomically(md_path, render_markdown(report).encode())
    return md_path, json_path


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _probe_line(report: dict) -> str:
    series = report.get("conv_probe_series")
    if not series:
        return "- conv probe series: –"
    verdict = "**disturbed**" if series["disturbed"] else "steady"
    return (
        f"- conv probe series ({series['count']} probes, start / after every scenario / end): min "
        f"{series['min']:.0f}, median {series['median']:.0f}, max {series['max']:.0f} GFLOP/s, spread "
        f"{series['spread']:.0%} — {verdict} (threshold {series['threshold']:.0%})"
    )


def weights_label(trained: bool | None) -> str:
    """Markdown for an export's ``trained`` flag: trained, **untrained** (seeded random) or unknown."""
    return {True: "trained", False: "**untrained** (seeded random)"}.get(trained, "unknown")


def machine_lines(report: dict) -> list[str]:
    """The ``## Machine`` section of a report (machine, conv probe and its series, instance plan)."""
    m = report["machine"]
    return [
        "## Machine",
        "",
        f"- CPU: {m.get('cpu_model')} ({m.get('usable_cores')} usable of {m.get('logical_cores')} logical cores), "
        f"memory {m.get('memory_gib')} GiB",
        f"- GPU: {m.get('gpu') or 'none'}",
        f"- {m.get('os')}, Python {m.get('python')}",
        "- " + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()),
        f"- conv probe: {report['conv_probe']['gflops']:.1f} GFLOP/s fp32 ({report['conv_probe']['shape']}, "
        f"{report['conv_probe']['provider']})",
        _probe_line(report),
        f"- Triton instance plan: {report['instance_plan']['description']}",
    ]


def render_markdown(report: dict) -> str:
    """A human-readable Markdown version of ``report`` (same numbers as the JSON)."""
    lines = [
        f"# Facecraft benchmark — preset `{report['preset']}`, device `{report['device']}`",
        "",
        f"{report['timestamp']} · {report['requests_per_scenario']} requests per scenario "
        f"({report['enhanced_requests_per_scenario']} with enhancement) · "
        f"concurrency {', '.join(map(str, report['concurrency']))}"
        + (" · quick smoke run" if report["quick"] else ""),
        "",
        *machine_lines(report),
        "",
        "## Models",
        "",
        "| model | GMAC / image (ONNX graph) | reference (full, DESIGN §9) | weights |",
        "|---|---|---|---|",
    ]
    for name, model in report["models"].items():
        trained = weights_label(model["trained"])
        lines.append(
            f"| {name} | {_fmt(model['gmac_per_image'])} | {_fmt(model['reference_gmac_full'], 1)} | {trained} |"
        )
    lines += [
        "",
        f"Photos: {', '.join(report['photos'])}",
        "",
        "## Throughput and latency",
        "",
        "| scenario | enhance | concurrency (effective) | ok / requests | images/s | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    first_plan = (report.get("plans") or ["auto"])[0]
    for s in report["scenarios"]:
        latency = s["latency_ms"]
        name = f"{s['scenario']} ({s['pass']})" if s.get("pass") else s["scenario"]
        if s.get("pair") is not None and not s.get("pass"):
            name += f" (pair {s['pair']})"
        if s.get("plan") not in (None, first_plan):
            name += f" [plan {s['plan']}]"
        lines.append(
            f"| {name} | {s['enhance']} | "
            f"{s['concurrency']} ({s.get('effective_concurrency', s['concurrency'])}) | "
            f"{s['ok']} / {s['requests']} | "
            f"{_fmt(s['images_per_s'], 3)} | {_fmt(latency.get('p50'), 0)} | {_fmt(latency.get('p95'), 0)} | "
            f"{_fmt(latency.get('p99'), 0)} |"
        )
    lines += [
        "",
        "## Triton per-model statistics (diff over each scenario)",
        "",
        "| scenario | enhance | c | model | requests | avg batch | queue ms/req | compute ms/req |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in report["scenarios"]:
        for d in s.get("triton_models", []):
            lines.append(
                f"| {s['scenario']} | {s['enhance']} | {s['concurrency']} | {d['model']} | {d['requests']} | "
                f"{_fmt(d['avg_batch_size'])} | {_fmt(d['queue_ms_per_request'], 1)} | {_fmt(d['compute_ms_per_request'], 1)} |"
            )
    lines += [
        "",
        "## Achieved model throughput vs the conv probe",
        "",
        "Per busy instance: GFLOP/s while one instance executes (Triton batch statistics). Over wall "
        "time: all instances together across the scenario, the share of the machine the model got.",
        "",
        "| scenario | enhance | c | model | avg batch | GFLOP/s per busy instance | of probe | GFLOP/s over wall time | of probe |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in report["model_throughput"]:
        lines.append(
            f"| {t['scenario']} | {t['enhance']} | {t['concurrency']} | {t['model']} | {_fmt(t['avg_batch_size'])} | "
            f"{_fmt(t['gflops_achieved'], 1)} | {_fmt(t['fraction_of_probe'])} | "
            f"{_fmt(t.get('gflops_over_wall'), 1)} | {_fmt(t.get('wall_fraction_of_probe'))} |"
        )
    lines += ["", "## Roofline and ratios", ""]
    for label, bound in report["roofline"].items():
        lines.append(
            f"- {label}: {_fmt(bound['gmac_per_image'])} GMAC/image → model-only roofline "
            f"{_fmt(bound['images_per_s'], 3)} images/s at the run's highest probe"
        )
    bound = report.get("model_bound")
    if bound:
        per = ", ".join(f"{name} {sec * 1000:.0f} ms" for name, sec in bound["seconds_per_image"].items())
        lines.append(
            f"- model bound (each ONNX model alone, one session, {bound['threads']} thread(s); "
            f"{bound['instances']} instance(s)): {per} per image → "
            + ", ".join(f"{label} {_fmt(v, 3)} images/s" for label, v in bound["images_per_s"].items())
        )
    disturbed = set(report.get("disturbed_ratios", []))
    for key, value in report["ratios"].items():
        probe_spread = report.get("ratio_probe_spread", {}).get(key)
        flag = " — **DISTURBED**: the machine's conv throughput moved" if key in disturbed else ""
        spread_text = f" (probe spread {probe_spread:.0%}{flag})" if probe_spread is not None else ""
        lines.append(f"- `{key}`: {_fmt(value)}{spread_text}")
    for key, rounds in report.get("paired_ratios", {}).items():
        lines.append(
            f"- `{key}` by paired round (sequential right before Triton): "
            + ", ".join(
                f"{r['ratio']:.2f} ({r['triton_images_per_s']:.3f} / {r['sequential_images_per_s']:.3f} img/s)"
                for r in rounds["rounds"]
            )
            + f"; min {rounds['min']:.2f}, median {rounds['median']:.2f}, max {rounds['max']:.2f}"
        )
    for label, bound in report["roofline"].items():
        best = bound.get("best_scenario")
        if best:
            pair = f" pair {best['pair']}" if best.get("pair") is not None else ""
            lines.append(
                f"- `end_to_end_over_roofline_{label}` from Triton gRPC c{best['concurrency']}{pair}: "
                f"{best['images_per_s']:.3f} img/s against the roofline at {best['probe_gflops']:.0f} GFLOP/s "
                "(the higher of the probes before and after it)"
            )
    if report.get("plan_comparison"):
        lines += [
            "",
            "## Instance plans side by side (Triton gRPC, each plan over the first)",
            "",
            "| plan | over | enhance | c | images/s | reference images/s | ratio | probe spread |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in report["plan_comparison"]:
            flag = " **DISTURBED**" if row["disturbed"] else ""
            spread = f"{row['probe_spread']:.0%}{flag}" if row["probe_spread"] is not None else "–"
            lines.append(
                f"| {row['plan']} | {row['over']} | {row['enhance']} | {row['concurrency']} | "
                f"{_fmt(row['images_per_s'], 3)} | {_fmt(row['reference_images_per_s'], 3)} | "
                f"{_fmt(row['ratio'])} | {spread} |"
            )
    lines += ["", "## Peak RSS (MiB)", ""]
    for group, values in report["peak_rss_mib"].items():
        lines.append(f"- {group}: total {values['total']}")
        for process, mib in sorted(values["processes"].items(), key=lambda kv: -kv[1]):
            lines.append(f"  - {process}: {mib}")
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"
