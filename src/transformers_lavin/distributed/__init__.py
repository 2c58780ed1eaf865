"""Scale-out: FSDP2 sharding of LaVIN with MMA, sharded checkpoints, and the check that a requested engine runs."""

from .checkpoint import gather_adapter_state_dict, load_sharded_checkpoint, save_adapter, save_sharded_checkpoint
from .engines import EngineUnavailableError, check_requested_engine, requested_engine
from .sharding import shard_lavin

__all__ = [
    "EngineUnavailableError",
    "check_requested_engine",
    "gather_adapter_state_dict",
    "load_sharded_checkpoint",
    "requested_engine",
    "save_adapter",
    "save_sharded_checkpoint",
    "shard_lavin",
]
