"""What a conversion will do, before it does it (``dry_run=True``, ``ryzq quantize
--dry-run``): every tensor's action and outputs, with totals."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ryzq.report import _size, display_width, pad, plural

#: Each action as the summary says it was done.
DONE = {
    "keep": "kept",
    "quantize": "quantized",
    "carry": "carried over",
    "generate": "generated",
    "divide": "divided",
    "dequantize": "dequantized",
    "convert": "converted",
    "drop": "dropped",
}


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    #: keep, quantize, divide (an autobitlinear bias), dequantize, convert or drop
    action: str
    #: why it is kept or divided
    why: str | None
    #: (name, dtype, shape, bytes) of each output tensor
    outputs: list[tuple[str, str, list[int], int]]
    #: the file of a model folder it goes to
    shard: str | None

    @property
    def bytes_out(self) -> int:
        return sum(o[3] for o in self.outputs)


def _output(source: str, output: tuple[str, str, list[int], int]) -> str:
    """An output's type and shape, and its name where it is not the source's (GGUF)."""
    name, dtype, shape, _ = output
    return f"{dtype} {shape}" + ("" if name == source else f" {name}")


@dataclass(frozen=True)
class ConversionPlan:
    layout: str
    method: str
    granularity: str
    linear_class: str
    tensors: list[PlannedTensor]
    bytes_in: int
    bytes_out: int
    #: the config.json a model folder gets
    config: dict[str, Any] | None
    warnings: list[str]
    #: a model folder's other files: copied, and left out with why
    copied_files: list[str]
    skipped_files: list[tuple[str, str]]

    @classmethod
    def _from_native(cls, d: dict[str, Any]) -> ConversionPlan:
        tensors = [
            PlannedTensor(
                name=t["name"],
                action=t["action"],
                why=t["why"],
                outputs=[tuple(o) for o in t["outputs"]],
                shard=f["shard"],
            )
            for f in d["files"]
            for t in f["tensors"]
        ]
        return cls(
            layout=d["layout"],
            method=d["method"],
            granularity=d["granularity"],
            linear_class=d["linear_class"],
            tensors=tensors,
            bytes_in=d["bytes_in"],
            bytes_out=d["bytes_out"],
            config=json.loads(d["config"]) if d["config"] else None,
            warnings=list(d["warnings"]),
            copied_files=list(d["copied_files"]),
            skipped_files=[tuple(f) for f in d["skipped_files"]],
        )

    def summary(self) -> str:
        actions = Counter(t.action for t in self.tensors)
        width = max([display_width(t.name) for t in self.tensors] + [4])
        lines = [
            f"plan: layout {self.layout}"
            + (f" ({self.linear_class})" if self.layout == "bitnet" else "")
            + f", method {self.method}, granularity {self.granularity}; nothing written",
            ", ".join(f"{plural(n, 'tensor')} {DONE[a]}" for a, n in sorted(actions.items())),
            f"size {_size(self.bytes_in)} -> {_size(self.bytes_out)} (tensor data)",
            "",
            f"{pad('name', width)}  {'action':<10} {'bytes out':>11}  outputs",
        ]
        for t in self.tensors:
            outs = ", ".join(_output(t.name, o) for o in t.outputs) or "-"
            why = f"  ({t.why})" if t.why else ""
            lines.append(f"{pad(t.name, width)}  {t.action:<10} {t.bytes_out:>11,}  {outs}{why}")
        if self.config is not None:
            lines += ["", f"quantization_config: {json.dumps(self.config['quantization_config'])}"]
            lines += [f"copied: {', '.join(self.copied_files) or 'nothing else'}"]
            lines += [f"left out: {path} ({why})" for path, why in self.skipped_files]
        for warning in self.warnings:
            lines += ["", f"warning: {warning}"]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()
