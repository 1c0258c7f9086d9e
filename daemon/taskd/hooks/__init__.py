"""Inbound webhooks: the ``[hooks]`` listener turns a verified ``POST /hooks/{source}`` into an
event (``send_event``), once per delivery id.

verify.py checks signatures (Standard Webhooks, HMAC-SHA256 as GitHub signs, Stripe), with no
I/O; intake.py turns a verified request into the event's payload and idempotency key;
server.py is the aiohttp listener; refusals.py logs refused requests, rate-limited.
"""
