from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.services.agent.namespaces import Namespaces, namespaces


@pytest.fixture
def spaces() -> Iterator[Namespaces]:
    with namespaces() as made:
        yield made
