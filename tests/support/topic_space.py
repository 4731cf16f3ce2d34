"""The topics of one test module, under a prefix of its own and deleted when the module finishes.

Each test creates only the topics it uses, under a fresh prefix inside the module's (so no test sees another's
records), in one request; the module's fixture deletes them all at the end, so a long-lived broker does not pile
up partition directories (and file handles) run after run.
"""

from __future__ import annotations

import uuid

from aiokafka.admin import NewTopic

from consumer.topics import TopicCatalog
from tests.support.kafka import create_catalog_topics, create_topics, delete_topics


class TopicSpace:
    """Names and creates the topics of one test module; ``delete`` removes every topic under its prefix."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.prefix = f"t{uuid.uuid4().hex[:8]}."

    def fresh_prefix(self) -> str:
        """A topic prefix for one test, inside the module's."""
        return f"{self.prefix}{uuid.uuid4().hex[:8]}."

    def name(self, base: str) -> str:
        """A topic name for one test, inside the module's prefix (for tests that make plain topics)."""
        return f"{self.prefix}{base}-{uuid.uuid4().hex[:8]}"

    async def catalog(self, *logical: str, partitions: int | None = None) -> TopicCatalog:
        """The topic catalog under a fresh prefix, with its ``logical`` topics created (every one when none is
        named). ``partitions`` caps each topic's count, for tests that do not depend on it."""
        catalog = TopicCatalog.load(prefix=self.fresh_prefix())
        if partitions is not None:
            catalog = catalog.model_copy(update={"topics": {
                name: spec.model_copy(update={"partitions": min(spec.partitions, partitions)})
                for name, spec in catalog.topics.items()}})
        await create_catalog_topics(self.bootstrap, catalog, logical)
        return catalog

    async def create(self, names: list[str], partitions: int) -> None:
        """Plain topics (names from ``name``) with ``partitions`` each."""
        if stray := [name for name in names if not name.startswith(self.prefix)]:
            raise ValueError(f"{stray} are outside {self.prefix!r}: nothing would delete them")
        await create_topics(self.bootstrap, [NewTopic(name, partitions, 1) for name in names])

    async def delete(self) -> list[str]:
        """Delete every topic under the module's prefix: those the tests made and those the code under test did."""
        return await delete_topics(self.bootstrap, self.prefix)
