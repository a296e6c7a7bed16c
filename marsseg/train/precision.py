"""The number format of training: float32, or mixed precision (float32 weights, bfloat16 or float16 maths).

``auto`` picks from the hardware, detected rather than assumed: float16 on a GPU (with loss scaling, which
Keras adds when it compiles), bfloat16 on a CPU whose flags in ``/proc/cpuinfo`` list native bfloat16
arithmetic (``avx512_bf16`` or ``amx_bf16``), else float32. Elsewhere bfloat16 is emulated and slower.
"""
from __future__ import annotations

from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str]:
    """The CPU feature flags the kernel reports (empty where there is no /proc/cpuinfo)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def cpu_has_bfloat16(flags: set[str] | None = None) -> bool:
    return bool(set(BF16_CPU_FLAGS) & (cpu_flags() if flags is None else flags))


def on_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def resolve(requested: str, gpu: bool, cpu_bfloat16: bool) -> str:
    """``train.precision`` -> the Keras dtype policy name."""
    if requested == "auto":
        requested = "float16" if gpu else "bfloat16" if cpu_bfloat16 else "float32"
    return POLICIES[requested]


def use_precision(requested: str) -> str:
    """Set the global Keras dtype policy for ``train.precision``; returns the policy name."""
    import keras

    gpu = on_gpu()
    policy = resolve(requested, gpu, cpu_has_bfloat16())
    if policy == "mixed_bfloat16" and not gpu and not cpu_has_bfloat16():
        print(f"train: warning: this CPU lists none of {', '.join(BF16_CPU_FLAGS)}: bfloat16 is emulated, "
              "expect it slower than float32")
    if policy == "mixed_float16" and not gpu:
        print("train: warning: float16 on a CPU is emulated, expect it slower than float32")
    keras.mixed_precision.set_global_policy(policy)
    return policy
