"""The one shim this package needs in PEFT: a `PeftType.MMA` member, so that MMA registers like a built-in method."""

from __future__ import annotations

from peft.utils.peft_types import PeftType

MMA_NAME = "MMA"


def add_mma_peft_type() -> PeftType:
    """
    Add `MMA` to `peft.PeftType` (a closed `str` enum) if it is not there yet, and return the member.

    Idempotent: a second call returns the same member. This is the only place the package reaches into PEFT's
    internals; `peft.register_peft_method` refuses names that are not `PeftType` members.
    """
    existing = PeftType.__members__.get(MMA_NAME)
    if existing is not None:
        return existing
    member = str.__new__(PeftType, MMA_NAME)
    member._name_ = MMA_NAME
    member._value_ = MMA_NAME
    member._sort_order_ = len(PeftType._member_names_)
    PeftType._member_map_[MMA_NAME] = member
    PeftType._value2member_map_[MMA_NAME] = member
    PeftType._member_names_.append(MMA_NAME)
    type.__setattr__(PeftType, MMA_NAME, member)
    return member


def register_mma_with_peft() -> None:
    """Register MMA's config and tuner with PEFT (idempotent)."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    from peft.utils import register_peft_method

    from .config import MMAConfig
    from .model import MMAModel

    peft_type = add_mma_peft_type()
    if peft_type in PEFT_TYPE_TO_CONFIG_MAPPING:
        return
    register_peft_method(name="mma", config_cls=MMAConfig, model_cls=MMAModel, prefix="mma_")
