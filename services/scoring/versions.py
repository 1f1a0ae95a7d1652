"""Which model version each product's frames are scored with.

Starts from the registry's latest versions and moves a product forward when a
newer version is announced on `inspection.models` (announcements are replayed
from the start of the topic, so one published while the ingress was down is
not missed; older ones change nothing). A product never seen before is looked
up in the registry again at most every `refresh_s`, so a frame of an unknown
product costs a directory listing only now and then.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable

from protos.hdm.v1 import models_pb2
from services.registry import ModelRegistry, ModelVersion, RegistryError, version_number

log = logging.getLogger(__name__)


class ModelVersions:
    def __init__(self, registry: ModelRegistry, refresh_s: float, clock: Callable[[], float] = time.monotonic):
        self._registry = registry
        self._refresh_s = refresh_s
        self._clock = clock
        self._current: dict[str, ModelVersion] = {}
        self._looked_up: dict[str, float] = {}
        for product in registry.products():
            latest = registry.latest(product)
            if latest is not None:
                self._current[product] = latest

    def lookup(self, product: str) -> ModelVersion | None:
        model = self._current.get(product)
        if model is not None:
            return model
        now = self._clock()
        if now - self._looked_up.get(product, -math.inf) < self._refresh_s:
            return None
        self._looked_up[product] = now
        try:
            model = self._registry.latest(product)
        except RegistryError:
            return None  # not even a valid product name
        if model is not None:
            self._current[product] = model
        return model

    def announce(self, message: models_pb2.ModelAnnouncement) -> bool:
        """Switch the product to the announced version if it is newer; True when it switched."""
        current = self._current.get(message.product)
        try:
            if current is not None and current.number >= version_number(message.version):
                return False
            model = self._registry.get(message.product, message.version)
        except RegistryError as exc:
            log.warning("ignoring model announcement %s/%s: %s", message.product, message.version, exc)
            return False
        self._current[message.product] = model
        log.info("product %s now scored with model version %s", model.product, model.version)
        return True

    def snapshot(self) -> dict[str, str]:
        current = dict(self._current)  # one atomic copy: other threads read while the poll thread writes
        return {product: model.version for product, model in sorted(current.items())}
