"""/metrics' LLM counters stay bounded whatever model ids task code names and whatever task ids
producers choose: past the cap, models share one label; tasks this daemon does not serve share
another. Dollars are summed exactly and only exposed as a float."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

from prometheus_client import generate_latest

from taskd.admin.metrics import MAX_MODEL_SERIES, OTHER_MODELS, OTHER_TASKS, Metrics
from taskd.models import LLMCall
from taskd.store.store import Store


def call(task_id: str, model: str, cost: str | None, **tokens: int) -> LLMCall:
    return LLMCall(
        run_id=None,
        task_id=task_id,
        attempt=1,
        step=None,
        queue="default",
        concurrency_key=None,
        tags=[],
        model=model,
        kind="message",
        outcome="ok",
        input_tokens=tokens.get("input", 0),
        output_tokens=tokens.get("output", 0),
        cache_write_tokens=tokens.get("cache_write", 0),
        cache_read_tokens=tokens.get("cache_read", 0),
        cost_usd=Decimal(cost) if cost is not None else None,
        latency_ms=1,
        stop_reason=None,
        request_id=None,
        error=None,
        started_at=datetime.now(UTC),
    )


def series(metrics: Metrics, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """The samples of one counter: their labels, their values."""
    found: dict[frozenset[tuple[str, str]], float] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name:
                found[frozenset(sample.labels.items())] = sample.value
    return found


def labels(**given: str) -> frozenset[tuple[str, str]]:
    return frozenset(given.items())


def metrics() -> Metrics:
    # the store is read only when rendering (queue depths); these tests collect directly
    return Metrics(cast(Store, None), dict, known_task=lambda task_id: task_id == "served")


def test_models_past_the_cap_share_one_label_and_unserved_tasks_another() -> None:
    telemetry = metrics()
    telemetry.llm_calls(
        [call("served", f"model-{n}", "0.01", input=1) for n in range(MAX_MODEL_SERIES + 30)]
        + [call("someone.else", "model-0", "0.5", output=3)]
    )
    calls = series(telemetry, "taskd_llm_calls_total")
    models = {dict(key)["model"] for key in calls}
    assert len(models) == MAX_MODEL_SERIES + 1 and OTHER_MODELS in models
    assert calls[labels(task="served", model=OTHER_MODELS, outcome="ok")] == 30
    assert calls[labels(task=OTHER_TASKS, model="model-0", outcome="ok")] == 1
    tokens = series(telemetry, "taskd_llm_tokens_total")
    assert tokens[labels(task="served", model=OTHER_MODELS, kind="input")] == 30
    assert tokens[labels(task=OTHER_TASKS, model="model-0", kind="output")] == 3
    assert tokens[labels(task=OTHER_TASKS, model="model-0", kind="cache_read")] == 0
    assert b"taskd_llm_cost_usd_total" in generate_latest(telemetry.registry)


def test_dollars_are_summed_exactly_and_unpriced_calls_add_none() -> None:
    telemetry = metrics()
    many: list[Any] = [call("served", "m", "0.1") for _ in range(10)]
    telemetry.llm_calls([*many, call("served", "unpriced", None, input=5)])
    cost = series(telemetry, "taskd_llm_cost_usd_total")
    assert cost == {labels(task="served", model="m"): 1.0}  # 0.1 ten times as floats: 0.999...
    assert (
        series(telemetry, "taskd_llm_calls_total")[
            labels(task="served", model="unpriced", outcome="ok")
        ]
        == 1
    )
