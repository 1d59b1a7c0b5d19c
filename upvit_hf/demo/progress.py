"""One progress bar per demo section, advanced once per stage, with one log line per finished stage."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from transformers.utils import logging
from transformers.utils.logging import tqdm

logger = logging.get_logger("upvit_hf.demo")


class Stages:
    """A bar over a section's stages; `with stages("name"):` shows the stage running and logs its time."""

    def __init__(self, section: str, total: int, enabled: bool = True) -> None:
        self.section = section
        self.bar = tqdm(total=total, desc=section, unit="stage", disable=not enabled)
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.bar.set_postfix_str(name)
        start = time.perf_counter()
        yield
        elapsed = time.perf_counter() - start
        self.seconds[name] = round(elapsed, 2)
        logger.info("%s: %s done in %.1fs", self.section, name, elapsed)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.set_postfix_str("done")
        self.bar.close()
