"""``callstream serve --workers N``: one supervisor, N media worker processes.

The supervisor (:mod:`.supervisor`) holds the public SIP and HTTP sockets, the store's
node lock and webhook delivery; each worker (:mod:`.child`) is a whole callstream
server that owns the calls whose SIP dialogs and RTP sockets it holds. SIP reaches the
owner by a hash of the Call-ID (:mod:`.dispatch`, the rule Kamailio's dispatcher plays
between machines), REST commands by the ``owner`` column of the call's row
(:mod:`.http_front`). See docs/architecture.md, "Processes".
"""
