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
