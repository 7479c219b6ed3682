from __future__ import annotations

from collections.abc import Iterator

import pytest

from api.localstack import Stack, running_stack
from api.settings import Settings


@pytest.fixture
def stack(settings: Settings, settings_env: dict[str, str]) -> Iterator[Stack]:
    env = {**settings_env, "HEXABASE_ACK_WAIT": "2"}
    with running_stack(settings.model_copy(update={"ack_wait": 2.0}), env) as running:
        yield running
