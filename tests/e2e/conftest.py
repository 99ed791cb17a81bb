from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from telnyx import Telnyx

from tests.helpers import ENVIRON_LOCK, ServerProcess, running_server
from tests.receiver import Receiver, webhook_receiver


@dataclass
class Rig:
    server: ServerProcess
    hooks: Receiver
    sdk: Telnyx
    workdir: Path

    @property
    def sip_target(self) -> str:
        return f"127.0.0.1:{self.server.sip_port}"


@contextmanager
def make_rig(data: Path, rtp_ports: tuple[int, int], env: dict[str, str] | None = None
             ) -> Iterator[Rig]:
    """A server whose default application posts webhooks to a real receiver; its own
    RTP port range keeps test modules' media apart."""
    with webhook_receiver() as hooks, running_server(
        data, env={"CALLSTREAM_WEBHOOK_URL": hooks.url,
                   "CALLSTREAM_RTP_PORT_MIN": str(rtp_ports[0]),
                   "CALLSTREAM_RTP_PORT_MAX": str(rtp_ports[1]), **(env or {})}
    ) as server:
        with ENVIRON_LOCK:  # its HTTP client reads os.environ: rigs may start in threads
            sdk = Telnyx(api_key=server.api_key, base_url=server.api_url, max_retries=0)
        try:
            yield Rig(server, hooks, sdk, data)
        finally:
            sdk.close()  # its pooled connection, else a ResourceWarning whenever gc runs


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with make_rig(tmp_path_factory.mktemp("e2e"), (31000, 31999)) as rig:
        yield rig
