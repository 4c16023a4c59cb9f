"""The OpenAPI description against the live daemon, with schemathesis (4.x, in the `test` extra).

For every operation the spec lists, schemathesis generates requests from the spec (valid ones,
and for operations that take input also invalid ones) and checks each response: no server
error, a documented status code, a documented content type, and a body that matches the
documented schema.  A response the spec does not describe fails the test.

The run is bounded and reproducible: at most MAX_EXAMPLES examples per operation and mode,
derandomized, no deadline, no example database.  Writes to POST /metrics/record come from
loopback, which the daemon allows by default.

To check the checker: ``CRANKSHAFT_OPENAPI_SPEC=/tmp/broken.yaml`` makes the test load the
spec from that file instead of from the daemon (requests still go to the daemon); a
deliberately wrong copy must make it fail.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import exporter
from exporter.endpoint import MetricsEndpoint
from exporter.http.app import App
from tests.conftest import RunningDaemon, require, start_daemon
from tests.helpers import wait_for

MAX_EXAMPLES = 30
SPEC_OVERRIDE = os.environ.get("CRANKSHAFT_OPENAPI_SPEC")
PACKAGED_SPEC = Path(exporter.__file__).parent / "http" / "openapi.yaml"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
# (method, path) -> reason, for mismatches between the spec and the server not yet fixed.
KNOWN_SPEC_BUGS: dict[tuple[str, str], str] = {}


def _operations() -> list[tuple[str, str, bool]]:
    """(method, path, takes input) of every operation in the spec."""
    spec = yaml.safe_load(Path(SPEC_OVERRIDE or PACKAGED_SPEC).read_text())
    ops = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in HTTP_METHODS:
                takes_input = bool(op.get("parameters") or op.get("requestBody")
                                   or item.get("parameters"))
                ops.append((method.upper(), path, takes_input))
    return ops


OPERATIONS = _operations()


def _params() -> list[Any]:
    params = []
    for method, path, takes_input in OPERATIONS:
        bug = KNOWN_SPEC_BUGS.get((method, path))
        marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
        params.append(pytest.param(method, path, takes_input, marks=marks,
                                   id=f"{method} {path}"))
    return params


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    require(importlib.util.find_spec("schemathesis") is not None,
            "schemathesis is not installed (pip install -e '.[test]')")
    d = start_daemon(tmp_path_factory.mktemp("schemathesis"), "--interval", "0.2")
    try:
        # /healthz answers 503 until the first collection: wait, so that what the run sees
        # does not depend on how soon after the start it begins.
        wait_for(lambda: d.request("/healthz").status == 200, "the daemon to become healthy", 20)
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def schema(api: RunningDaemon) -> Any:
    import schemathesis

    if SPEC_OVERRIDE:
        return schemathesis.openapi.from_path(SPEC_OVERRIDE)
    return schemathesis.openapi.from_url(api.url + "/openapi.yaml", timeout=10)


def test_the_spec_lists_exactly_the_served_operations() -> None:
    routes = App(MetricsEndpoint(sources=[])).routes
    described = {(m, p) for m, p, _ in OPERATIONS}
    served = {(m, p) for p, methods in routes.items() for m in methods}
    assert described == served


@pytest.mark.parametrize(("method", "path", "takes_input"), _params())
def test_operation_conforms_to_openapi(api: RunningDaemon, schema: Any, method: str, path: str,
                                       takes_input: bool) -> None:
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance]
    operation = schema[path][method]
    modes = [GenerationMode.POSITIVE]
    if takes_input:
        modes.append(GenerationMode.NEGATIVE)
    for mode in modes:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            case.call_and_validate(base_url=api.url, checks=checks, timeout=15)

        run()
