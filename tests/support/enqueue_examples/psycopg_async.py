import uuid

import psycopg
from psycopg.types.json import Jsonb


async def place_order(conn: psycopg.AsyncConnection, customer: str, amount: int) -> uuid.UUID:
    async with conn.transaction():
        cursor = await conn.execute(
            "INSERT INTO orders (customer, amount) VALUES (%s, %s) RETURNING id",
            (customer, amount),
        )
        (order_id,) = await cursor.fetchone()
        cursor = await conn.execute(
            "SELECT taskd.trigger(%s, %s, %s)",
            ("send-receipt", Jsonb({"order_id": order_id}), Jsonb({"tags": ["async"]})),
        )
        (run_id,) = await cursor.fetchone()
    return run_id
