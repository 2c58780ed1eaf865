"""Evaluation tasks, each reading its benchmark's standard file layout."""

from .base import Sample, Task
from .captioning import CaptioningTask
from .llava_bench import LlavaBenchTask
from .pope import PopeTask
from .scienceqa import ScienceQATask
from .vqa import VQATask

TASKS: dict[str, type[Task]] = {
    "scienceqa": ScienceQATask,
    "pope": PopeTask,
    "captioning": CaptioningTask,
    "vqa": VQATask,
    "llava_bench": LlavaBenchTask,
}

__all__ = ["TASKS", "CaptioningTask", "LlavaBenchTask", "PopeTask", "Sample", "ScienceQATask", "Task", "VQATask"]
