"""Metric names in PromQL expressions, recording rules and Prometheus text scrapes (test helpers)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

PROMQL_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
    | {"inf", "nan", "atan2"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_VARIABLE = re.compile(r"\$\w+")
_IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def promql_metric_names(expr: str) -> set[str]:
    """Names of the series selected by a PromQL expression (functions, keywords, labels removed)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub(" ", text)
    text = _VARIABLE.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names


def recording_rules(rules_path: Path) -> dict[str, str]:
    """``record`` name → expression for every recording rule in a Prometheus rules file."""
    document = yaml.safe_load(rules_path.read_text())
    return {
        rule["record"]: rule["expr"]
        for group in document["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def exporter_metric_names(expr: str, records: dict[str, str]) -> set[str]:
    """Metric names an expression needs from the exporters, recording rules expanded."""
    names: set[str] = set()
    for name in promql_metric_names(expr):
        if name in records:
            names |= exporter_metric_names(records[name], records)
        else:
            names.add(name)
    return names


_SUFFIXES = {
    "counter": ("",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


def scraped_metric_names(text: str) -> set[str]:
    """Series names a Prometheus text exposition offers: every sample, plus every declared family.

    A labelled counter that has not been incremented yet is declared (``# TYPE``) but has no
    sample; its declared name (and a histogram's ``_bucket``/``_sum``/``_count``) still count.
    """
    names: set[str] = set()
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names |= {name + suffix for suffix in _SUFFIXES.get(kind, ("",))}
        elif not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def sampled_metric_names(text: str) -> set[str]:
    """Series names that have at least one sample in a Prometheus text exposition."""
    return {
        re.split(r"[{\s]", line.strip(), maxsplit=1)[0]
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    }
