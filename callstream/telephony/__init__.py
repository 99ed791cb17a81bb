"""Where SIP meets media: the leg (written once), the server's switch and the CLI caller.

* :mod:`~callstream.telephony.leg` — one dialog's RTP media and the SDP around it;
* :mod:`~callstream.telephony.switch` — the server's calls, bound to Call Control;
* :mod:`~callstream.telephony.caller` — ``callstream call``;
* :mod:`~callstream.telephony.causes` — SIP status -> Telnyx ``hangup_cause``;
* :mod:`~callstream.telephony.codecs` — codec names as users write them.
"""
