import uuid

import psycopg
from psycopg.types.json import Jsonb


def place_order(conn: psycopg.Connection, customer: str, amount: int) -> uuid.UUID:
    with conn.transaction():
        order_id = conn.execute(
            "INSERT INTO orders (customer, amount) VALUES (%s, %s) RETURNING id",
            (customer, amount),
        ).fetchone()[0]
        run_id = conn.execute(
            "SELECT taskd.trigger(%s, %s, %s)",
            (
                "send-receipt",
                Jsonb({"order_id": order_id}),
                Jsonb(
                    {
                        "queue": "emails",
                        "idempotency_key": f"receipt-{order_id}",
                        "concurrency_key": customer,
                        "tags": [f"customer:{customer}"],
                    }
                ),
            ),
        ).fetchone()[0]
    return run_id  # a uuid.UUID; the run exists once the transaction has committed
