"""What every port's app of one gateway worker shares."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from liftoff.core.settings import Settings
from liftoff.http.dispatch import Dispatcher


@dataclass
class Gateway:
    settings: Settings
    dispatcher: Dispatcher
    started_s: float = field(default_factory=time.time)
