"""The OpenAPI description as served: ``openapi.yaml`` with the parts that depend on the
declared series filled in from the running catalog (the series objects of ``/metrics``,
their units, the CSV columns and the ingest fields), so it can never lag behind a new
source.  schemathesis checks the live server against what this returns."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from exporter.series import SeriesSpec

_FIXED_KEYS = ["timestamp", "uptime_ms", "is_collecting", "collection_interval_ms"]


def openapi_document(catalog: tuple[SeriesSpec, ...], all_series: tuple[SeriesSpec, ...]) -> Any:
    """``catalog``: the series this daemon keeps; ``all_series``: every registered one (what
    ingest may push)."""
    text = resources.files("exporter.http").joinpath("openapi.yaml").read_text(encoding="utf-8")
    doc = yaml.safe_load(text)
    schemas = doc["components"]["schemas"]
    shown = [s for s in catalog if s.json_key is not None]
    metrics = schemas["MetricsDocument"]
    fixed = {k: v for k, v in metrics["properties"].items() if k in _FIXED_KEYS}
    tail = {k: metrics["properties"][k] for k in ("extensions", "latency_breakdown")}
    series = {s.json_key: {"$ref": "#/components/schemas/Series",
                           "description": f"{s.key}: {s.help}"} for s in shown}
    metrics["properties"] = {**fixed, **series, **tail}
    metrics["required"] = [*fixed, *series, *tail]
    schemas["Series"]["properties"]["unit"]["enum"] = sorted({s.unit for s in shown})
    columns = ",".join(["timestamp", *(s.csv_column for s in catalog if s.csv_column)])
    csv_ok = doc["paths"]["/metrics/csv"]["get"]["responses"]["200"]
    csv_ok["description"] = (
        f"Header row {columns}; empty cells where a series has no sample at that timestamp"
    )
    batch = schemas["Batch"]["properties"]
    pushed = {
        s.push_field: {"type": "integer" if s.whole else "number", "minimum": 0,
                       "description": f"sets {s.key} ({s.unit})"}
        for s in all_series if s.push_field is not None
    }
    schemas["Batch"]["properties"] = {**pushed, "extensions": batch["extensions"],
                                      "latency_ms": batch["latency_ms"]}
    return doc


def render_openapi(catalog: tuple[SeriesSpec, ...], all_series: tuple[SeriesSpec, ...]) -> bytes:
    return yaml.safe_dump(
        openapi_document(catalog, all_series), sort_keys=False, allow_unicode=True, width=100
    ).encode()
