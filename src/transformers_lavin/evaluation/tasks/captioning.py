"""Image captioning scored with the COCO caption metrics.

Standard layout: a COCO-style annotation file and an image directory:
```
captions.json   # {"images": [{"id": 42, "file_name": "000042.jpg"}, ...],
                #  "annotations": [{"image_id": 42, "caption": "A cat on a mat."}, ...]}
images/         # the files named in "file_name" (or give image_dir)
```
"""

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..metrics.captioning import CAPTION_METRICS, caption_scores
from .base import Sample, Task, read_json, require_fields


class CaptioningTask(Task):
    """
    Captioning: one caption per image, scored with BLEU-1..4, METEOR, ROUGE-L and CIDEr (see
    [`~metrics.captioning.caption_scores`] for which metrics can run where). Scores are reported in percent (CIDEr
    times 100, as in papers).

    Args:
        annotation_file (`str | Path`): The COCO-style annotation file (or a directory holding `captions.json`).
        image_dir (`str | Path`, *optional*): Defaults to `images/` next to the annotation file.
        prompt (`str`, *optional*, defaults to `"A short image caption:"`): The text given with each image.
        max_new_tokens (`int`, *optional*, defaults to 32)
    """

    name = "captioning"
    headline_metrics = CAPTION_METRICS

    def __init__(
        self,
        annotation_file: str | Path,
        image_dir: str | Path | None = None,
        prompt: str = "A short image caption:",
        max_new_tokens: int = 32,
    ) -> None:
        path = Path(annotation_file)
        self.annotation_file = path / "captions.json" if path.is_dir() else path
        self.image_dir = Path(image_dir) if image_dir else self.annotation_file.parent / "images"
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens

    def config(self) -> dict[str, Any]:
        return {**super().config(), "prompt": self.prompt}

    def load(self) -> list[Sample]:
        data = read_json(self.annotation_file, "COCO caption annotation file")
        require_fields(data, ("images", "annotations"), f"The annotation file {self.annotation_file}")
        captions = defaultdict(list)
        for number, row in enumerate(data["annotations"]):
            require_fields(row, ("image_id", "caption"), f"annotations[{number}] of {self.annotation_file}")
            captions[row["image_id"]].append(str(row["caption"]))
        samples = []
        for number, image in enumerate(data["images"]):
            require_fields(image, ("id", "file_name"), f"images[{number}] of {self.annotation_file}")
            if not captions.get(image["id"]):
                raise ValueError(f"Image {image['id']} of {self.annotation_file} has no caption in 'annotations'.")
            samples.append(
                Sample(
                    id=str(image["id"]),
                    prompt=self.prompt,
                    images=[str(self.image_dir / image["file_name"])],
                    target=captions[image["id"]],
                )
            )
        return samples

    def score(self, sample: Sample, output: str) -> dict[str, Any]:
        # Caption metrics are corpus-level: nothing to score per sample.
        return {}

    def summarize(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        # An empty caption is scored as a caption with no words ("." tokenises to nothing).
        predictions = {r["id"]: r["output"].strip() or "." for r in records}
        references = {r["id"]: r["target"] for r in records}
        scores, report = caption_scores(predictions, references)
        return {**{name: 100.0 * value for name, value in scores.items()}, **report, "n": len(records)}
