"""An AI analyst (seed 001's ``analyst-workflow``): Claude answers a question about the data it
is given by querying it with tools, over a conversation of several calls, each call a step.

``analyst-workflow`` (payload ``{question, tables, model, max_turns}``; ``tables`` maps a
table's name to its rows, JSON objects) is one durable run:

1. step ``turn-1``: Claude gets the question and two tools, ``list_tables`` (the tables,
   their columns and row counts) and ``query`` (a structured SQL-like query over one table:
   ``where`` filters, ``group_by`` with an aggregate, ``select``, ``order_by``, ``limit``);
2. while Claude answers with ``tool_use`` blocks: step ``tools-N`` runs them over the given
   data (a bad query becomes a ``tool_result`` with ``is_error``, for Claude to correct, not a
   failed run), and step ``turn-N+1`` sends the results back in the conversation;
3. the last answer's text is the report; the run returns it with every query made and the
   tokens used; its progress (``turn``, ``tool_calls``) is in the run's metadata.

Each call is streamed (``ctx.llm.messages.stream``): a page reading ``/api/stream?run=<id>``
sees the report being written (``llm_text`` events). Each call is recorded by its step: when
the run executes again (a 429 or an overload handed it back to the queue, a daemon restarted)
the earlier turns are read from their steps, never asked (nor paid for) twice. The calls'
tokens and cost are in ``taskd costs`` (``--by task``; ``--by key`` when triggered with the
user as ``concurrency_key``). More than ``max_turns`` calls without a report fails the run.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from anthropic.types import Message
from pydantic import BaseModel, Field, ValidationError

from taskd import AbortRun, Context, Queue, Retry, task

MODEL = "claude-sonnet-4-5"
MAX_TOKENS = 2000
MAX_ROWS = 200  # rows a query returns at most (the rest is counted, not sent)

ANALYST = Queue("analyst", concurrency=5)

SYSTEM_PROMPT = (
    "You are a data analyst. Answer the user's question from the data only, using the tools: "
    "list_tables first, then query. When you have the figures, write a short report (plain "
    "text, the figures that answer the question, one line on how they were computed)."
)

TOOLS: list[dict[str, Any]] = [
    {
        "name": "list_tables",
        "description": "The tables available, with their columns and row counts.",
        "input_schema": {"type": "object", "properties": {}},
    },
    {
        "name": "query",
        "description": (
            "Query one table: filter rows (where), group them (group_by) with an aggregate "
            "(count, sum, avg, min, max of a column), or select columns; then order_by a "
            "column (or 'value', the aggregate) and limit."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "table": {"type": "string"},
                "where": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "column": {"type": "string"},
                            "op": {"enum": ["=", "!=", "<", "<=", ">", ">=", "contains"]},
                            "value": {},
                        },
                        "required": ["column", "op", "value"],
                    },
                },
                "select": {"type": "array", "items": {"type": "string"}},
                "group_by": {"type": "string"},
                "aggregate": {
                    "type": "object",
                    "properties": {
                        "fn": {"enum": ["count", "sum", "avg", "min", "max"]},
                        "column": {"type": "string"},
                    },
                    "required": ["fn"],
                },
                "order_by": {"type": "string"},
                "desc": {"type": "boolean"},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_ROWS},
            },
            "required": ["table"],
        },
    },
]


class AnalystIn(BaseModel):
    question: str = Field(min_length=1, max_length=10_000)
    tables: dict[str, list[dict[str, Any]]] = Field(min_length=1)
    """The data: each table's rows (JSON objects)."""
    model: str = MODEL
    max_turns: int = Field(8, ge=1, le=30)
    """Claude calls at most; without a report by then the run fails."""


class ToolCall(BaseModel):
    turn: int
    name: str
    input: dict[str, Any]
    ok: bool
    rows: int
    """Rows the query matched (0 for list_tables and errors)."""


class AnalystOut(BaseModel):
    question: str
    report: str
    turns: int
    tool_calls: list[ToolCall]
    input_tokens: int
    output_tokens: int


class ToolError(Exception):
    """A tool's input is wrong: Claude is told so, and may correct it."""


@task(id="analyst-workflow", queue=ANALYST, retry=Retry(max_attempts=3), max_duration="30m")
async def analyst_workflow(payload: AnalystIn, ctx: Context) -> AnalystOut:
    """Claude answers ``question`` from ``tables`` by querying them, turn by turn."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": payload.question}]
    calls: list[ToolCall] = []
    tokens_in = tokens_out = 0
    for turn in range(1, payload.max_turns + 1):
        answer = await ctx.step(f"turn-{turn}", ask, payload.model, messages, ctx)
        tokens_in += answer["input_tokens"]
        tokens_out += answer["output_tokens"]
        messages.append({"role": "assistant", "content": answer["content"]})
        uses = [block for block in answer["content"] if block["type"] == "tool_use"]
        if answer["stop_reason"] != "tool_use" or not uses:
            report = "".join(b["text"] for b in answer["content"] if b["type"] == "text").strip()
            if not report:
                raise AbortRun(f"Claude ended turn {turn} without a report")
            return AnalystOut(
                question=payload.question,
                report=report,
                turns=turn,
                tool_calls=calls,
                input_tokens=tokens_in,
                output_tokens=tokens_out,
            )
        done = await ctx.step(f"tools-{turn}", use_tools, payload.tables, uses)
        calls += [ToolCall(turn=turn, **call) for call in done["calls"]]
        messages.append({"role": "user", "content": done["results"]})
        if ctx.metadata.get("turn", 0) < turn:
            await ctx.set_metadata(turn=turn, tool_calls=len(calls))
    raise AbortRun(f"no report after {payload.max_turns} turns (max_turns)")


async def ask(model: str, messages: list[dict[str, Any]], ctx: Context) -> dict[str, Any]:
    """One Claude call, streamed (the UI sees the text as it comes); what the step keeps: the
    answer's content blocks as the next request sends them back, its stop reason, its usage."""
    async with ctx.llm.messages.stream(
        model=model, max_tokens=MAX_TOKENS, system=SYSTEM_PROMPT, tools=TOOLS, messages=messages
    ) as stream:
        message = await stream.get_final_message()
    return recorded(message)


def recorded(message: Message) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    for block in message.content:
        if block.type == "text":
            content.append({"type": "text", "text": block.text})
        elif block.type == "tool_use":
            content.append(
                {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
            )
    return {
        "content": content,
        "stop_reason": message.stop_reason,
        "input_tokens": message.usage.input_tokens,
        "output_tokens": message.usage.output_tokens,
    }


# the tools --------------------------------------------------------------------------------------


def use_tools(
    tables: dict[str, list[dict[str, Any]]], uses: list[dict[str, Any]]
) -> dict[str, Any]:
    """Run each tool_use over the data: the ``tool_result`` blocks for Claude, and a line per
    call for the run's output."""
    results, calls = [], []
    for use in uses:
        try:
            answer = run_tool(tables, use["name"], use["input"])
        except ToolError as exc:
            results.append(
                {
                    "type": "tool_result",
                    "tool_use_id": use["id"],
                    "content": str(exc),
                    "is_error": True,
                }
            )
            calls.append({"name": use["name"], "input": use["input"], "ok": False, "rows": 0})
            continue
        results.append(
            {"type": "tool_result", "tool_use_id": use["id"], "content": json.dumps(answer)}
        )
        rows = answer.get("row_count", 0) if isinstance(answer, dict) else 0
        calls.append({"name": use["name"], "input": use["input"], "ok": True, "rows": rows})
    return {"results": results, "calls": calls}


def run_tool(tables: dict[str, list[dict[str, Any]]], name: str, given: Any) -> Any:
    if name == "list_tables":
        return {
            table: {"columns": sorted({c for row in rows for c in row}), "rows": len(rows)}
            for table, rows in tables.items()
        }
    if name == "query":
        try:
            query = Query.model_validate(given)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "input"
            raise ToolError(f"bad query: {where}: {first['msg']}") from None
        return query.run(tables)
    raise ToolError(f"no tool named {name!r}: use list_tables or query")


class Condition(BaseModel):
    column: str
    op: Literal["=", "!=", "<", "<=", ">", ">=", "contains"]
    value: Any

    def holds(self, row: dict[str, Any]) -> bool:
        value = row.get(self.column)
        if self.op == "=":
            return bool(value == self.value)
        if self.op == "!=":
            return bool(value != self.value)
        if self.op == "contains":
            return isinstance(value, str) and str(self.value).lower() in value.lower()
        if value is None:
            return False
        try:
            return bool(
                {
                    "<": value < self.value,
                    "<=": value <= self.value,
                    ">": value > self.value,
                    ">=": value >= self.value,
                }[self.op]
            )
        except TypeError:
            raise ToolError(
                f"cannot compare {self.column} ({value!r}) with {self.value!r}"
            ) from None


class Aggregate(BaseModel):
    fn: Literal["count", "sum", "avg", "min", "max"]
    column: str | None = None

    def of(self, rows: list[dict[str, Any]]) -> Any:
        if self.fn == "count":
            return (
                len(rows)
                if self.column is None
                else sum(row.get(self.column) is not None for row in rows)
            )
        if self.column is None:
            raise ToolError(f"aggregate {self.fn} needs a column")
        values = [row[self.column] for row in rows if row.get(self.column) is not None]
        if not all(isinstance(v, int | float) for v in values):
            if self.fn in ("sum", "avg"):
                raise ToolError(f"{self.fn}({self.column}): the column is not numeric")
        if not values:
            return None
        if self.fn == "sum":
            return round(sum(values), 6)
        if self.fn == "avg":
            return round(sum(values) / len(values), 6)
        return min(values) if self.fn == "min" else max(values)


class Query(BaseModel):
    table: str
    where: list[Condition] = []
    select: list[str] | None = None
    group_by: str | None = None
    aggregate: Aggregate | None = None
    order_by: str | None = None
    desc: bool = False
    limit: int = Field(50, ge=1, le=MAX_ROWS)

    def run(self, tables: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        if self.table not in tables:
            raise ToolError(f"no table {self.table!r}; the tables are {sorted(tables)}")
        rows = [row for row in tables[self.table] if all(c.holds(row) for c in self.where)]
        if self.group_by is not None or self.aggregate is not None:
            aggregate = self.aggregate or Aggregate(fn="count")
            groups: dict[Any, list[dict[str, Any]]] = {}
            for row in rows:
                key = row.get(self.group_by) if self.group_by is not None else None
                groups.setdefault(json.dumps(key, sort_keys=True), []).append(row)
            columns = [*([self.group_by] if self.group_by else []), "value"]
            table = [
                {
                    **({self.group_by: json.loads(key)} if self.group_by else {}),
                    "value": aggregate.of(members),
                }
                for key, members in groups.items()
            ]
        else:
            columns = self.select or sorted({c for row in rows for c in row})
            table = [{c: row.get(c) for c in columns} for row in rows]
        order = self.order_by
        if order is not None:
            if order not in columns:
                raise ToolError(f"order_by {order!r}: not one of {columns}")
            present = [r for r in table if r[order] is not None]
            try:
                present.sort(key=lambda r: r[order], reverse=self.desc)
            except TypeError:
                raise ToolError(f"order_by {order!r}: mixed types") from None
            table = present + [r for r in table if r[order] is None]
        return {
            "columns": columns,
            "rows": [[r[c] for c in columns] for r in table[: self.limit]],
            "row_count": len(table),
            "truncated": len(table) > self.limit,
        }
