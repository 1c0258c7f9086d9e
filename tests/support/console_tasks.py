"""Tasks the browser tests run: one that reports progress step by step, released by the test
(a gate per run, not a sleep), one that fails with a traceback, one that waits to be canceled."""

from __future__ import annotations

from typing import Any

import anyio

from taskd import Context, Retry, task, wait

GATES: dict[str, anyio.Event] = {}
"""Named gates the ``console.progress`` task waits at: ``{name}:{step}``."""


def gate(name: str) -> anyio.Event:
    return GATES.setdefault(name, anyio.Event())


@task(id="console.progress")
async def progress(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Sets metadata.progress to step/steps, waiting at gate ``{gate}:{step}`` before each."""
    steps = int(payload["steps"])
    for step in range(1, steps + 1):
        await gate(f"{payload['gate']}:{step}").wait()
        await ctx.set_metadata(progress=step / steps, stage=f"step {step}")
        ctx.log.info(f"step {step} of {steps} done", step=step)
    return {"done": steps, "echo": payload.get("echo")}


@task(id="console.fails", retry=Retry(max_attempts=1))
async def fails(payload: Any, ctx: Context) -> None:
    ctx.log.warning("about to fail")
    raise ValueError(f"order {payload.get('order', '?')} could not be charged")


@task(id="console.sleeps")
async def sleeps(payload: Any, ctx: Context) -> None:
    """Runs until canceled."""
    await anyio.sleep_forever()


@task(id="console.echo")
async def echo(payload: Any, ctx: Context) -> Any:
    return payload


TASKS = [progress, fails, sleeps, echo]


@task(id="console.token")
async def token_waiter(payload: Any, ctx: Context) -> Any:
    """Waits for a wait token (completed from the run page); returns what it was given."""
    token = await wait.create_token(timeout="1h")
    return {"token_output": await wait.for_token(token)}


TASKS.append(token_waiter)


@task(id="console.parent")
async def parent(payload: dict[str, Any], ctx: Context) -> Any:
    """Two child runs of console.echo, then (with ``llm``) one LLM call in a step."""
    outputs = await echo.batch_trigger_and_wait([{"n": 1}, {"n": 2}])
    if not payload.get("llm"):
        return {"children": outputs}

    async def write() -> str:
        message = await ctx.llm.messages.create(
            model="claude-haiku-4-5",
            max_tokens=100,
            messages=[{"role": "user", "content": "One line about queues."}],
        )
        block = message.content[0]
        assert block.type == "text"
        return block.text

    return {"children": outputs, "line": await ctx.step("write", write)}


TASKS.append(parent)
