import uuid

from sqlalchemy import Engine, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

TRIGGER = text("SELECT taskd.trigger(:task_id, :payload, :options)").bindparams(
    bindparam("payload", type_=JSONB), bindparam("options", type_=JSONB)
)


def place_order(engine: Engine, customer: str, amount: int) -> uuid.UUID:
    with Session(engine) as session, session.begin():
        order_id = session.execute(
            text("INSERT INTO orders (customer, amount) VALUES (:customer, :amount) RETURNING id"),
            {"customer": customer, "amount": amount},
        ).scalar_one()
        run_id = session.execute(
            TRIGGER,
            {
                "task_id": "send-receipt",
                "payload": {"order_id": order_id},
                "options": {"idempotency_key": f"receipt-{order_id}"},
            },
        ).scalar_one()
    return run_id  # committed when the `with` block ends without an exception
