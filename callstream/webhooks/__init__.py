"""Webhooks: event bodies, Ed25519 signing, the durable outbox and its delivery worker.

Modules, each named for one concept:

* :mod:`~callstream.webhooks.payloads` builds every webhook body (the one wire-format module);
* :mod:`~callstream.webhooks.events` turns an event into an outbox row with its targets;
* :mod:`~callstream.webhooks.signing` holds the Ed25519 key and signs each attempt;
* :mod:`~callstream.webhooks.retry` is the pure retry/failover policy;
* :mod:`~callstream.webhooks.delivery` sends one attempt over HTTP;
* :mod:`~callstream.webhooks.worker` claims due rows from the outbox and delivers them;
* :mod:`~callstream.webhooks.metrics` exports the Prometheus series.

Nothing is imported here, so ``python -m callstream.webhooks.worker`` runs cleanly.
"""
