"""RTP media: packets, codecs, jitter buffering, the per-call media hub.

Layout (each wire format in one module, cores free of I/O):

* :mod:`~callstream.media.rtp`, :mod:`~callstream.media.rtcp`,
  :mod:`~callstream.media.dtmf` — RFC 3550 / RFC 4733 packets.
* :mod:`~callstream.media.seqnum`, :mod:`~callstream.media.clock` — wraparound
  maths and NTP time (the only wall-clock read).
* :mod:`~callstream.media.stats` — RFC 3550 receiver statistics, MOS, the
  ``call_quality_stats`` webhook object.
* :mod:`~callstream.media.codecs` — PCMU, PCMA, G.722, L16, resampling,
  transcoding; defines the internal PCM format (16-bit little-endian mono at
  the codec's own rate, 20 ms frames).
* :mod:`~callstream.media.jitter` — reordering and concealment.
* :mod:`~callstream.media.session` — the sans-I/O RTP/RTCP session of a leg.
* :mod:`~callstream.media.hub` — taps, audio sources, mixing and bridges.
* :mod:`~callstream.media.transport` — the asyncio edge: sockets, the shared
  20 ms pacer, port allocation.

Wiring one leg::

    hub = MediaHub(call_session_id)
    hub.add_leg(leg_id, codec.sample_rate)
    session = RtpSession(codec, payload_type=pt, dtmf_payload_type=101,
                         remote_address=(sdp_host, sdp_port),
                         wallclock_offset=wallclock_offset(loop.time()))
    endpoint = await open_rtp_endpoint(session, hub, leg_id, host=bind_host,
                                       ports=allocator, pacer=pacer,
                                       on_event=handle_media_event)
    tap = hub.open_tap(leg_id, "both_tracks")      # a WebSocket stream
    source = QueueSource(codec.sample_rate)        # its bidirectional audio
    hub.add_source(leg_id, source)
"""
