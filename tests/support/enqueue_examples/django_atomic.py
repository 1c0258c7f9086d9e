import json
import uuid

from django.db import connection, transaction


def place_order(customer: str, amount: int) -> uuid.UUID:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO orders (customer, amount) VALUES (%s, %s) RETURNING id",
            [customer, amount],
        )
        (order_id,) = cursor.fetchone()
        cursor.execute(
            "SELECT taskd.trigger(%s, %s::jsonb, %s::jsonb)",
            [
                "send-receipt",
                json.dumps({"order_id": order_id}),
                json.dumps({"idempotency_key": f"receipt-{order_id}"}),
            ],
        )
        (run_id,) = cursor.fetchone()
    return run_id
