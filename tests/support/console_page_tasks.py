"""Tasks a second daemon of the fleet serves in the console pages' browser tests: a task with
a pydantic payload model (its JSON Schema reaches the Tasks page from the registration, not
from the daemon serving the page), subscribed to an event, on a queue with limits and an LLM
budget per key, with a budget per run."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from taskd import Budget, Context, Queue, task


class Address(BaseModel):
    city: str = Field(min_length=1)
    zip: str = Field(pattern=r"^[0-9]{5}$")


class Order(BaseModel):
    """An order to charge."""

    model_config = ConfigDict(extra="forbid")
    customer: str = Field(min_length=1, max_length=40, description="Who pays")
    amount: int = Field(ge=1, le=10_000)
    currency: Literal["EUR", "USD"] = "EUR"
    address: Address | None = None


BILLING = Queue("billing", concurrency=4, budget=Budget(usd=5, per="1d"))


@task(id="orders.charge", queue=BILLING, on_event="order.placed", budget_usd=2.5)
async def charge(payload: Order, ctx: Context) -> dict[str, int]:
    return {"charged": payload.amount}


PAGE_TASKS = [charge]
