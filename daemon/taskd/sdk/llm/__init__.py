"""LLM calls made by tasks: ``ctx.llm`` (client), what their failures mean (failures), what
they cost (prices)."""
