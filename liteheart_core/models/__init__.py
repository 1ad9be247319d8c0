"""Teacher and student ECG networks (see :mod:`liteheart_core.models.nets`)."""

from liteheart_core.models.nets import (
    Net,
    NetConfig,
    build_net,
    count_parameters,
    student_config,
    teacher_config,
)

__all__ = [
    "Net",
    "NetConfig",
    "build_net",
    "count_parameters",
    "student_config",
    "teacher_config",
]
