"""Schemathesis against a live daemon's /api/openapi.json: no request gets a 5xx, and every
response fits the status codes, content types and schemas the document declares.

Two passes, each against its own daemon with a token set (schemathesis sends it as a header,
and also tries requests without it):

- the engine, as ``st run`` drives it: examples, coverage (boundaries, wrong types, missing
  auth, unsupported methods) and fuzzing phases over every operation;
- property-based tests per operation (schemathesis strategies under hypothesis), positive and
  negative, whose path ids are mostly real: served tasks, existing runs. This is the pass that
  gets generated options (durations, times, strings with NUL characters...) past validation
  and down to PostgreSQL.

The daemon serves in the test's event loop; schemathesis is synchronous (requests), so it runs
in a worker thread meanwhile. /api/stream never ends and is left out (tested on its own).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import aiohttp
import anyio.to_thread
import hypothesis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err
from schemathesis.engine import Status, events, from_schema
from schemathesis.generation import GenerationMode

from taskd import Context, Retry, task
from tests.support.admin import TOKEN, admin_daemon
from tests.support.in_process import admin_url

AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECK_NAMES = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
ENGINE_MAX_EXAMPLES = 30
SEED = 20261123

# Values that broke the API once (a 5xx): NUL characters (PostgreSQL refuses them in text and
# jsonb), durations that overflow an interval or push a run past year 9999, times at the edges
# of the datetime range. The engine draws from them besides its own generation.
EDGE_STRINGS = [
    "\x00",
    "a\x00b",
    "nan",
    "inf",
    "1e400",
    "300000000000",
    "99999999999999999999",
    "9999-12-31T23:00:00-05:00",
    "0001-01-01T00:00:00+05:00",
    "2026-11-23T09:00:00",
    "\U0001f600\u202e\ufeff",
]
EDGE_NUMBERS = [1e308, -1e308, 3e11, 2**63, -(2**63), 2**31, 0, -1]


class Order(BaseModel):
    order_id: int
    note: str = ""


@task(id="fuzz.order", retry=Retry(max_attempts=1))
async def order(payload: Order, ctx: Context) -> dict[str, int]:
    return {"order_id": payload.order_id}


@task(id="fuzz.free", retry=Retry(max_attempts=1))
async def free(payload: Any, ctx: Context) -> Any:
    return payload


async def fetch_document(url: str) -> dict[str, Any]:
    """The OpenAPI document, after a few runs were made (lists and details carry data)."""
    async with aiohttp.ClientSession(headers=AUTH) as http:
        async with http.get(f"{url}/api/openapi.json") as response:
            assert response.status == 200
            document: dict[str, Any] = await response.json()
        for payload in ({"order_id": 1}, {"order_id": 2, "note": "ünïcode"}):
            async with http.post(
                f"{url}/api/tasks/{order.id}/trigger", json={"payload": payload, "tags": ["t"]}
            ) as response:
                assert response.status == 201
    return document


async def existing_run_ids(url: str) -> list[str]:
    async with aiohttp.ClientSession(headers=AUTH) as http:
        async with http.get(f"{url}/api/runs") as response:
            page = await response.json()
    return [run["id"] for run in page["runs"]]


def describe(failures: list[str], cases: int) -> str:
    unique = sorted(set(failures))
    return f"{len(unique)} failure(s) in {cases} cases:\n" + "\n".join(unique)


# the engine ---------------------------------------------------------------------------------------


def run_engine(document: dict[str, Any], base_url: str) -> tuple[list[str], int]:
    """Examples, coverage and fuzzing phases; the failures found and the cases sent."""
    config = SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "cache": {"enabled": False},  # no .schemathesis/ directory left behind
            "dictionaries": {
                "edge-strings": {"values": EDGE_STRINGS},
                "edge-numbers": {"values": EDGE_NUMBERS},
                "task-ids": {"values": [order.id, free.id]},
            },
            "generation": {
                "dictionaries": {
                    "string": {"dictionary": "edge-strings", "probability": 0.2},
                    "number": {"dictionary": "edge-numbers", "probability": 0.2},
                    "integer": {"dictionary": "edge-numbers", "probability": 0.2},
                },
            },
            # Most triggers name a served task, so that their options get past the lookup.
            "operations": [
                {
                    "include-path": "/api/tasks/{id}/trigger",
                    "parameters": {"path.id": {"dictionary": "task-ids", "probability": 0.8}},
                }
            ],
        }
    )
    project = config.projects.override
    project.update(base_url=base_url, headers=AUTH, workers=1, request_timeout=10)
    project.phases.update(phases=["examples", "coverage", "fuzzing"])
    project.checks.update(included_check_names=CHECK_NAMES)
    project.generation.update(max_examples=ENGINE_MAX_EXAMPLES, database="none")
    schema = schemathesis.openapi.from_dict(document, config=config).exclude(path="/api/stream")
    failures: list[str] = []
    cases = 0
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            recorder = event.recorder
            cases += len(recorder.cases)
            for checks in recorder.checks.values():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        info = check.failure_info
                        failures.append(
                            f"{recorder.label}: {info.failure.title}: {info.failure.message}\n"
                            f"    {info.code_sample}"
                        )
        elif isinstance(event, events.NonFatalError):
            failures.append(f"{event.label}: error: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            failures.append(f"fatal: {event.exception!r}")
    return failures, cases


async def test_schemathesis_engine_finds_no_server_error_nor_mismatch(database: str) -> None:
    async with admin_daemon(database, [order, free], token=TOKEN) as daemon:
        url = admin_url(daemon)
        document = await fetch_document(url)
        started = time.monotonic()
        failures, cases = await anyio.to_thread.run_sync(run_engine, document, url)
        elapsed = time.monotonic() - started
    assert not failures, describe(failures, cases)
    assert cases > 300, f"only {cases} cases were generated"
    print(f"schemathesis engine: {cases} cases in {elapsed:.1f}s")


# property-based, per operation --------------------------------------------------------------------

# Examples per operation and mode: the operations with inputs get more.
EXAMPLES: dict[str, dict[GenerationMode, int]] = {
    "/api/tasks/{id}/trigger": {GenerationMode.POSITIVE: 150, GenerationMode.NEGATIVE: 50},
    "/api/runs": {GenerationMode.POSITIVE: 80, GenerationMode.NEGATIVE: 40},
    "/api/runs/{id}": {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 20},
}
OTHERS = {GenerationMode.POSITIVE: 10}  # no inputs (or only an id): little to vary


def run_properties(
    document: dict[str, Any], base_url: str, run_ids: list[str]
) -> tuple[list[str], int]:
    config = SchemathesisConfig()
    config.cache.enabled = False
    config.projects.override.update(base_url=base_url, headers=AUTH, request_timeout=10)
    schema = schemathesis.openapi.from_dict(document, config=config).exclude(path="/api/stream")
    # Real ids, plus one that exists nowhere (made-up ones are the engine pass's business).
    run_choices = [*run_ids, str(uuid.uuid4())]
    known_ids = {
        "/api/tasks/{id}/trigger": [order.id, free.id, "no.such.task"],
        "/api/runs/{id}": run_choices,
        "/api/runs/{id}/cancel": run_choices,
        "/api/runs/{id}/replay": run_choices,
    }
    failures: list[str] = []
    sent = 0
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"an operation schemathesis cannot read: {result.err()}")
            continue
        operation = result.ok()
        for mode, examples in EXAMPLES.get(operation.path, OTHERS).items():
            strategy = operation.as_strategy(mode)
            ids = known_ids.get(operation.path)
            if ids is not None:
                by_id: Callable[[str], Any] = partial(path_id_strategy, operation, mode)
                strategy = st.sampled_from(ids).flatmap(by_id)

            @given(case=strategy)
            @settings(
                max_examples=examples,
                derandomize=True,
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            )
            def check(case: Any) -> None:
                nonlocal sent
                response = case.call()
                sent += 1
                case.validate_response(response, checks=CHECKS)

            try:
                check()
            except (Exception, FailureGroup) as exc:  # a check's Failure, or a group of them
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    return failures, sent


def path_id_strategy(operation: Any, mode: GenerationMode, id: str) -> Any:
    return operation.as_strategy(mode, path_parameters={"id": id})


async def test_schemathesis_properties_per_operation(database: str) -> None:
    async with admin_daemon(database, [order, free], token=TOKEN) as daemon:
        url = admin_url(daemon)
        document = await fetch_document(url)
        run_ids = await existing_run_ids(url)
        started = time.monotonic()
        failures, sent = await anyio.to_thread.run_sync(run_properties, document, url, run_ids)
        elapsed = time.monotonic() - started
    assert not failures, describe(failures, sent)
    assert sent > 300, f"only {sent} requests were sent"
    print(f"schemathesis properties: {sent} requests in {elapsed:.1f}s")
