"""Image captioning scored with the COCO caption metrics.

Standard layout: a COCO-style annotation file and an image directory:
```
captions.json   # {"images": [{"id": 42, "file_name": "000042.jpg"}, ...],
                #  "annotations": [{"image_id": 42, "caption": "A cat on a mat."}, ...]}
images/         # the files named in "file_name" (or give image_dir)
```
Hub layout (`yerevann/coco-karpathy`, `lmms-lab/COCO-Caption`): the captions in `sentences` (strings, or records with
`raw`) or `answer` (strings); the image in `image`, or as a file `filepath/filename` or `file_name` under `image_dir`
(the COCO image root); the image id from `cocoid`, `question_id`, `id` or `imgid` (else the row number).
"""

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..metrics.captioning import CAPTION_METRICS, caption_scores
from .base import Sample, Task, read_json, require_fields
from .sources import TableImage, load_hub_table, resolve_inside, table_root, use_hub_layout

_CAPTION_COLUMNS = ("sentences", "answer")
_ID_COLUMNS = ("cocoid", "question_id", "id", "imgid")


def _caption_texts(value: Any) -> list[str]:
    return [str(item["raw"]) if isinstance(item, Mapping) else str(item) for item in value]


class CaptioningTask(Task):
    """
    Captioning: one caption per image, scored with BLEU-1..4, METEOR, ROUGE-L and CIDEr (see
    [`~metrics.captioning.caption_scores`] for which metrics can run where). Scores are reported in percent (CIDEr
    times 100, as in papers).

    Args:
        annotation_file (`str | Path`): The COCO-style annotation file (or a directory holding `captions.json`).
        image_dir (`str | Path`, *optional*): Defaults to `images/` next to the annotation file.
        prompt (`str`, *optional*, defaults to `"A short image caption:"`): The text given with each image.
        layout (`str`, *optional*, defaults to `"auto"`): `"official"`, `"hub"` or `"auto"` (see [`~tasks.sources`]).
        hub_split (`str`, *optional*, defaults to `"test"`): The split read from a Hub id.
        max_new_tokens (`int`, *optional*, defaults to 32)
    """

    name = "captioning"
    overall_metric = "CIDEr"
    unit = "score x 100"
    headline_metrics = CAPTION_METRICS

    def __init__(
        self,
        annotation_file: str | Path,
        image_dir: str | Path | None = None,
        prompt: str = "A short image caption:",
        layout: str = "auto",
        hub_split: str = "test",
        max_new_tokens: int = 32,
    ) -> None:
        self.hub = use_hub_layout(annotation_file, layout)
        self.source, self.hub_split = annotation_file, hub_split
        self.given_image_dir = Path(image_dir) if image_dir else None
        path = Path(annotation_file)
        self.annotation_file = path / "captions.json" if path.is_dir() else path
        self.image_dir = Path(image_dir) if image_dir else self.annotation_file.parent / "images"
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens

    def config(self) -> dict[str, Any]:
        return {**super().config(), "prompt": self.prompt, "data": str(self.source)}

    def _load_hub(self) -> list[Sample]:
        table = load_hub_table(self.source, self.hub_split, (), "COCO caption table")
        captions_column = next((c for c in _CAPTION_COLUMNS if c in table.column_names), None)
        id_column = next((c for c in _ID_COLUMNS if c in table.column_names), None)
        if captions_column is None:
            raise ValueError(
                f"The caption table at {self.source} has no caption column ({' or '.join(_CAPTION_COLUMNS)}); it has "
                f"{table.column_names}."
            )
        root = self.given_image_dir or table_root(self.source)
        has_image_column = "image" in table.column_names
        rows = table.remove_columns("image") if has_image_column else table
        samples = []
        for index, row in enumerate(rows):
            where = f"Row {index} of {self.source}"
            if has_image_column:
                image: Any = TableImage(table, index, "image", root)
            elif row.get("filename") is not None:
                image = str(resolve_inside(root, Path(row.get("filepath") or "") / row["filename"], where))
            elif row.get("file_name") is not None:
                image = str(resolve_inside(root, row["file_name"], where))
            else:
                raise ValueError(f"{where} has no image: give an image, filepath+filename or file_name column.")
            references = _caption_texts(row[captions_column])
            if not references:
                raise ValueError(f"{where} has no caption in {captions_column!r}.")
            image_id = row[id_column] if id_column else index
            samples.append(Sample(id=str(image_id), prompt=self.prompt, images=[image], target=references))
        return samples

    def load(self) -> list[Sample]:
        if self.hub:
            return self._load_hub()
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
                    images=[str(resolve_inside(self.image_dir, image["file_name"], f"images[{number}]"))],
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
