from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from telnyx import Telnyx

from tests.helpers import ServerProcess, running_server
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


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """A server whose default application posts webhooks to a real receiver."""
    data = tmp_path_factory.mktemp("e2e")
    with webhook_receiver() as hooks, running_server(
        data, env={"CALLSTREAM_WEBHOOK_URL": hooks.url, "CALLSTREAM_RTP_PORT_MIN": "31000",
                   "CALLSTREAM_RTP_PORT_MAX": "31999"}
    ) as server:
        sdk = Telnyx(api_key=server.api_key, base_url=server.api_url, max_retries=0)
        yield Rig(server, hooks, sdk, data)
