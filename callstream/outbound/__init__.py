"""The outbound network policy: where API users may make this server connect.

:mod:`~callstream.outbound.policy` judges addresses (sans-I/O);
:mod:`~callstream.outbound.connect` resolves, checks and connects (webhooks, streams, forks);
:mod:`callstream.api.destinations` checks the URLs an API request names before it is
accepted. docs/security/outbound.md is the user's side.
"""
