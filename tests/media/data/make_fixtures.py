"""Write the binary RTP/RTCP fixtures of tests/media (run from anywhere).

Each good fixture has bad twins that differ in one field; the tests check
the exact parse error of each. The bytes are built by hand with struct so
they do not depend on the code under test.
"""

from __future__ import annotations

import struct
from pathlib import Path

HERE = Path(__file__).parent


def rtp_header(first: int, second: int, seq: int, ts: int, ssrc: int) -> bytes:
    return struct.pack("!BBHII", first, second, seq, ts, ssrc)


def main() -> None:
    files: dict[str, bytes] = {}
    payload = bytes(range(160))
    # PCMU, marker set, seq 4660, ts 0x01020304, ssrc 0xdeadbeef.
    files["rtp_pcmu.bin"] = rtp_header(0x80, 0x80 | 0, 4660, 0x01020304, 0xDEADBEEF) + payload
    # A SIPp dtmf_2833_1.pcap packet: PT 101, marker, event 1, volume 10, duration 0.
    files["rtp_dtmf.bin"] = bytes.fromhex("80e51f30000033e00e05384e010a0000")
    # Two CSRC, an RFC 8285 one-byte extension (one word), 4 octets of padding.
    files["rtp_full.bin"] = (
        rtp_header(0xB2, 8, 65535, 0xFFFFFFFF, 1)
        + struct.pack("!II", 0x11111111, 0x22222222)
        + struct.pack("!HH", 0xBEDE, 1)
        + bytes.fromhex("10ab0000")
        + b"\xd5" * 20
        + b"\x00\x00\x00\x04"
    )
    full = files["rtp_full.bin"]
    files["bad_rtp_short.bin"] = files["rtp_pcmu.bin"][:11]
    files["bad_rtp_version.bin"] = b"\x40" + files["rtp_pcmu.bin"][1:]
    files["bad_rtp_csrc.bin"] = rtp_header(0x83, 0, 1, 2, 3) + b"\x00" * 8  # 3 CSRC, 2 present
    files["bad_rtp_extension_header.bin"] = rtp_header(0x90, 0, 1, 2, 3) + b"\xbe\xde"
    files["bad_rtp_extension.bin"] = rtp_header(0x90, 0, 1, 2, 3) + struct.pack("!HH", 0xBEDE, 4)
    files["bad_rtp_padding.bin"] = full[:-1] + b"\xff"
    files["bad_rtp_padding_zero.bin"] = full[:-1] + b"\x00"

    # RTCP: SR (one report block) + SDES CNAME, as a sender sends them.
    sr_body = struct.pack("!IQIII", 0x0A0B0C0D, 0xE4F1B2C3_80000000, 160000, 500, 80000)
    lost = (-3 & 0xFFFFFF).to_bytes(3, "big")
    block = struct.pack("!IB3sIIII", 0xDEADBEEF, 12, lost, 70000, 45, 0x12345678, 65536)
    sr = struct.pack("!BBH", 0x81, 200, (len(sr_body) + len(block)) // 4) + sr_body + block
    cname = b"callstream@127.0.0.1"
    items = bytes((1, len(cname))) + cname
    chunk = struct.pack("!I", 0x0A0B0C0D) + items + bytes(4 - len(items) % 4)
    sdes = struct.pack("!BBH", 0x81, 202, len(chunk) // 4) + chunk
    files["rtcp_sr_sdes.bin"] = sr + sdes
    rr_header = struct.pack("!BBHI", 0x81, 201, (4 + len(block)) // 4, 0x01020304)
    files["rtcp_rr.bin"] = rr_header + block
    reason = b"hangup"
    bye_body = struct.pack("!I", 0x0A0B0C0D) + bytes((len(reason),)) + reason + b"\x00"
    files["rtcp_bye.bin"] = struct.pack("!BBH", 0x81, 203, len(bye_body) // 4) + bye_body
    app = struct.pack("!BBH", 0x80 | 3, 204, 3) + struct.pack("!I", 7) + b"NAME" + b"data"
    files["rtcp_rr_app.bin"] = struct.pack("!BBHI", 0x80, 201, 1, 9) + app

    files["bad_rtcp_short.bin"] = b"\x81\xc8\x00"
    files["bad_rtcp_version.bin"] = b"\x41" + files["rtcp_rr.bin"][1:]
    files["bad_rtcp_truncated.bin"] = files["rtcp_rr.bin"][:-4]
    files["bad_rtcp_sr_short.bin"] = struct.pack("!BBH", 0x80, 200, 4) + bytes(16)
    # Two report blocks announced, one present.
    files["bad_rtcp_rr_block.bin"] = struct.pack("!BBHI", 0x82, 201, 7, 1) + block
    sdes_header = struct.pack("!BBHI", 0x81, 202, 2, 1)
    files["bad_rtcp_sdes_item.bin"] = sdes_header + b"\x01\x09abc\x00"
    files["bad_rtcp_bye_sources.bin"] = struct.pack("!BBHI", 0x83, 203, 1, 1)
    files["bad_rtcp_bye_reason.bin"] = struct.pack("!BBHI", 0x81, 203, 2, 1) + b"\x09abc"
    files["bad_rtcp_padding.bin"] = struct.pack("!BBHI", 0xA0, 201, 1, 1)[:-1] + b"\x09"

    for name, data in files.items():
        (HERE / name).write_bytes(data)


if __name__ == "__main__":
    main()
