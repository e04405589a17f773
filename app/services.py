"""What every job needs, opened once per worker in `on_startup` and handed down through ctx."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.github import GitHubApp
from app.runs import RunStore
from app.settings import Settings


@dataclass
class Services:
    settings: Settings
    redis: Any  # arq's ArqRedis: Redis plus enqueue_job
    store: RunStore
    github: GitHubApp
    models: Any  # app.models.ModelClient

    @property
    def data_dir(self) -> Path:
        return self.settings.conductor_data_dir
