"""Serving LaVIN with transformers' own OpenAI-compatible server, `transformers serve`: the `lavin-serve` command.

`transformers serve` loads a model by name from transformers' own module or, for the models of its multimodal
mapping, with `AutoModelForMultimodalLM`, and it knows nothing of packages outside transformers. It also reads each
model's config with `AutoConfig`, which finds none in an adapter directory (transformers' Auto model classes load
one: the base model named in `adapter_config.json`, then the adapter). `lavin-serve` imports this package (which
registers `lavin` with the Auto classes and MMA with PEFT), registers what the server reads
([`register_with_transformers_serve`]), and then runs transformers' server itself, with all its options:

```bash
lavin-serve path/to/lavin --port 8000          # a saved or merged LaVIN, or a LaVIN + MMA adapter directory
```

The registration runs when this module is imported, so a process the server starts to load a model in, which imports
the command's main module, registers too.
"""

from __future__ import annotations

import functools
import json
import os
import sys

import typer
from transformers import AutoConfig, AutoModelForMultimodalLM
from transformers.cli.serve import Serve
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES,
)
from transformers.utils import CONFIG_NAME
from transformers.utils.import_utils import is_serve_available
from transformers.utils.peft_utils import find_adapter_config_file

from .configuration_lavin import LavinConfig
from .modeling_lavin import LavinForConditionalGeneration


def register_with_transformers_serve() -> None:
    """
    Make `transformers serve` load and serve LaVIN and adapter directories (idempotent):

    - `lavin` joins the model types of transformers' image-text-to-text and multimodal LM mappings, which the server
      reads to choose the Auto class that loads a model (`AutoModelForMultimodalLM`, where LaVIN is registered too)
      and to take images in chat messages;
    - `AutoConfig.from_pretrained` of a directory (or Hub repository) holding an adapter and no model config gives
      the config of the adapter's base model, as transformers' Auto model classes resolve such a directory.
    """
    AutoModelForMultimodalLM.register(LavinConfig, LavinForConditionalGeneration, exist_ok=True)
    for names in (MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES, MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES):
        names.setdefault(LavinConfig.model_type, LavinForConditionalGeneration.__name__)
    if not hasattr(AutoConfig.from_pretrained, "__wrapped__"):
        AutoConfig.from_pretrained = classmethod(_base_config_for_adapters(AutoConfig.from_pretrained.__func__))


def _base_config_for_adapters(from_pretrained):
    @functools.wraps(from_pretrained)
    def from_pretrained_or_adapter(cls, pretrained_model_name_or_path, *args, **kwargs):
        path = str(pretrained_model_name_or_path)
        if not os.path.isfile(os.path.join(path, CONFIG_NAME)):
            hub_kwargs = {
                key: kwargs[key] for key in ("revision", "token", "cache_dir", "local_files_only") if key in kwargs
            }
            adapter_config = find_adapter_config_file(path, **hub_kwargs)
            if adapter_config is not None:
                with open(adapter_config, encoding="utf-8") as file:
                    pretrained_model_name_or_path = json.load(file).get("base_model_name_or_path")
                if not pretrained_model_name_or_path:
                    raise ValueError(
                        f"The adapter in {path} names no base model (base_model_name_or_path in adapter_config.json): "
                        "save it from a PEFT model whose base was loaded with from_pretrained, or merge it and serve "
                        "the merged model."
                    )
                kwargs.pop("revision", None)  # the adapter's revision, not its base model's
        return from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs)

    return from_pretrained_or_adapter


register_with_transformers_serve()  # at import: also in the model's own process, which imports the main module


def main(argv: list[str] | None = None) -> None:
    """`lavin-serve`: `transformers serve`, with LaVIN registered. Takes the same arguments and options."""
    if not is_serve_available():
        sys.exit("lavin-serve needs transformers' serving dependencies: pip install 'transformers-lavin[serve]'.")
    app = typer.Typer(add_completion=False, help=Serve.__doc__)
    app.command()(Serve)
    app(args=sys.argv[1:] if argv is None else argv, prog_name="lavin-serve")


if __name__ == "__main__":
    main()
