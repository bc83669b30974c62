"""What machine a benchmark ran on, printed at the top of its results: the CPU (model name,
family and model, which tell Zen 3 from Zen 4), its core count and the SIMD levels ryzq runs."""

from __future__ import annotations

import os
import platform

import ryzq


def cpu() -> str:
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    family = (
        f", family {fields['cpu family']} model {fields['model']}" if "cpu family" in fields else ""
    )
    return f"{name}{family}"


def describe() -> str:
    return (
        f"CPU: {cpu()}; {os.cpu_count()} CPUs; SIMD levels {', '.join(ryzq.simd_levels())} "
        f"(in use: {ryzq.simd_level()})"
    )
