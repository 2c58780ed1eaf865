"""The contract of the one patch this package makes to transformers (`mma/routing.py`'s `_GENERATION_METHODS`):
`GenerationMixin`'s private methods it replaces on model instances still take the parameters the replacements pass.
When a transformers release renames or reorders them, this fails first, naming the method."""

import inspect

import pytest
from transformers import GenerationMixin

from transformers_lavin.mma.routing import _GENERATION_METHODS, UPSTREAM_GENERATION_SIGNATURES


def parameter_names(function) -> tuple[str, ...]:
    prefixes = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
    return tuple(prefixes.get(p.kind, "") + p.name for p in inspect.signature(function).parameters.values())


def test_every_patched_method_has_a_recorded_signature():
    assert set(UPSTREAM_GENERATION_SIGNATURES) == set(_GENERATION_METHODS)


@pytest.mark.parametrize("name", sorted(UPSTREAM_GENERATION_SIGNATURES))
def test_upstream_signature_is_the_one_the_patch_calls(name):
    upstream = getattr(GenerationMixin, name, None)
    assert upstream is not None, (
        f"transformers.GenerationMixin.{name} is gone: mma/routing.py's patch needs a new home"
    )
    assert parameter_names(upstream) == UPSTREAM_GENERATION_SIGNATURES[name], (
        f"transformers.GenerationMixin.{name} now takes {parameter_names(upstream)}; mma/routing.py's replacement "
        f"calls it with {UPSTREAM_GENERATION_SIGNATURES[name]}: update the replacement and the recorded signature."
    )


def test_the_check_sees_a_changed_signature():
    def renamed(self, expand_size=1, is_encoder_decoder=False, inputs=None, **model_kwargs):
        pass

    assert parameter_names(renamed) != UPSTREAM_GENERATION_SIGNATURES["_expand_inputs_for_generation"]


def test_upstream_still_refuses_modality_ids_so_the_patch_is_still_needed():
    # If transformers starts accepting unknown model kwargs, `_validate_with_modality_ids` can be deleted.
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=32,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    model = LlamaForCausalLM(config)
    with pytest.raises(ValueError, match="modality_ids"):
        GenerationMixin._validate_model_kwargs(model, {"modality_ids": object()})
