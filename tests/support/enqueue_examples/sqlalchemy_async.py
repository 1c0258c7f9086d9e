import uuid

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

TRIGGER = text("SELECT taskd.trigger(:task_id, :payload, :options)").bindparams(
    bindparam("payload", type_=JSONB), bindparam("options", type_=JSONB)
)


async def place_order(engine: AsyncEngine, customer: str, amount: int) -> uuid.UUID:
    async with AsyncSession(engine) as session, session.begin():
        result = await session.execute(
            text("INSERT INTO orders (customer, amount) VALUES (:customer, :amount) RETURNING id"),
            {"customer": customer, "amount": amount},
        )
        order_id = result.scalar_one()
        result = await session.execute(
            TRIGGER,
            {"task_id": "send-receipt", "payload": {"order_id": order_id}, "options": {}},
        )
        run_id = result.scalar_one()
    return run_id
