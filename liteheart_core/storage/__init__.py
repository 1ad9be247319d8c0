"""The run registry of the federated server: runs, rounds, client reports and checkpoints in SQL."""

from liteheart_core.storage.registry import CheckpointInfo, Registry, RegistryError, mask_url

__all__ = ["CheckpointInfo", "Registry", "RegistryError", "mask_url"]
