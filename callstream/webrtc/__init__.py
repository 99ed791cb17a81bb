"""Calls from a browser: a WebRTC leg into the media hub (aiortc), joined to Call Control.

* :mod:`~callstream.webrtc.offer` — the browser's SDP offer checked (size, audio, Opus);
* :mod:`~callstream.webrtc.tokens` — short-lived, single-use tokens a page calls in with;
* :mod:`~callstream.webrtc.leg` — one peer connection's audio in and out of a hub;
* :mod:`~callstream.webrtc.gateway` — the browser's calls beside the switch's SIP calls.
"""
