"""The model card (``README.md``) of a model folder ryzq wrote: what the weights are, how they
were made, how far they moved, and how to load them, in the Hugging Face Hub's format (YAML
front matter, then Markdown).

The source folder's own card describes the source model; it is kept at the end of the new one,
and its license and languages carried into the front matter, so that nothing it said is lost.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import ryzq
from ryzq.array import LAYOUT_INFO
from ryzq.hub import is_repo_id

#: Front-matter keys of the source's card that hold for the converted model too.
_CARRIED_KEYS = ("license", "license_name", "license_link", "language", "pipeline_tag")
#: A top-level key of YAML front matter (the lines under it are indented, or list items).
_KEY = re.compile(r"^([A-Za-z_][\w-]*)\s*:")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)^---[ \t]*(?:\r?\n|\Z)", re.DOTALL | re.MULTILINE)


def split_card(text: str) -> tuple[str, str]:
    """A card's front matter (without its ``---`` lines) and its body."""
    text = text.removeprefix("\ufeff")  # a byte-order mark, as some editors write
    m = _FRONT_MATTER.match(text)
    if not m:
        return "", text
    return m.group(1).rstrip("\r\n"), text[m.end() :]


def _carried_lines(front_matter: str) -> list[str]:
    """The source's front-matter entries that hold for the converted model, as they were
    written (a key and the lines indented under it)."""
    lines, keep = [], False
    for line in front_matter.splitlines():
        key = _KEY.match(line)
        if key:
            keep = key.group(1) in _CARRIED_KEYS
        if keep:
            lines.append(line)
    return lines


def base_model(folder: Path) -> str | None:
    """The Hub repository the model came from, where its ``config.json`` records one."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    name = config.get("_name_or_path") if isinstance(config, dict) else None
    # transformers records the repository a model was loaded from in ``_name_or_path``.
    if isinstance(name, str) and is_repo_id(name) and not Path(name).exists():
        return name
    return None


def _quote(value: str) -> str:
    return json.dumps(value)  # a JSON string is a YAML string


def _table(rows: list[tuple[str, str]]) -> list[str]:
    return ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


def _nmse(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def render_card(
    report: dict[str, Any],
    *,
    base: str | None = None,
    source_card: str | None = None,
    evaluation: dict[str, Any] | None = None,
    source: str | None = None,
) -> str:
    """The card of the folder ``report`` (a :meth:`QuantizationReport.to_dict`) describes;
    ``source`` names where it came from (by default the report's source path)."""
    layout = report["layout"]
    info = LAYOUT_INFO.get(layout, {})
    summary = report["summary"]
    front, source_body = split_card(source_card or "")
    meta = []
    if base:
        meta += [f"base_model: {_quote(base)}", "base_model_relation: quantized"]
    meta += ["library_name: transformers"] if layout == "bitnet" else []
    meta += _carried_lines(front)
    tags = list(dict.fromkeys(["bitnet", "ternary", "ryzq", layout]))
    meta += ["tags:", *(f"- {tag}" for tag in tags)]
    name = base or Path(report["src"]).name
    of = f"[{base}](https://huggingface.co/{base})" if base else f"`{name}`"
    linear = report.get("linear_class")
    stored = {
        "bitlinear": "1/scale in weight_scale, which the layer divides by",
        "autobitlinear": "the scale in weight_scale, which the layer multiplies by",
    }
    how = [
        ("layout", f"`{layout}`: {info.get('description', '')}"),
        ("method", f"{report['method']} per {report['granularity']}"),
    ]
    if linear:
        how.append(("linear class", f"{linear} ({stored.get(linear, '')})"))
    ratio = summary.get("compression_ratio")
    how += [
        (
            "quantized",
            f"{summary['quantized_tensors']:,} of {summary['tensors']:,} tensors "
            f"({summary['quantized_parameters']:,} of {summary['parameters']:,} parameters)",
        ),
        (
            "size",
            f"{summary['bytes_in']:,} bytes -> {summary['bytes_out']:,}"
            + (f" ({ratio:.2f}x smaller)" if ratio else ""),
        ),
        (
            "weight error",
            f"NMSE pooled {_nmse(summary.get('pooled_nmse'))}, per tensor mean "
            f"{_nmse(summary['nmse'].get('mean'))}, max {_nmse(summary['nmse'].get('max'))}",
        ),
        ("written by", f"ryzq {ryzq.__version__}"),
        ("source", f"`{source or report['src']}`"),
    ]
    lines = [
        "---",
        *meta,
        "---",
        "",
        f"# {name}, ternary ({layout})",
        "",
        f"The ternary (BitNet b1.58) weights of {of}, packed by ryzq. NMSE is the squared "
        "error of the weights over their mean square.",
        "",
        *_table(how),
    ]
    layers = [g for g in report.get("layers", []) if g.get("quantized")]
    if layers:
        lines += ["", "## Weight error per layer", "", "| layer | quantized | NMSE | zeros |"]
        lines.append("|---|---:|---:|---:|")
        for g in layers:
            zeros = g.get("zeros_fraction")
            lines.append(
                f"| {g.get('block') or 'outside blocks'} | {g['quantized']}/{g['tensors']} | "
                f"{_nmse(g.get('nmse'))} | {'-' if zeros is None else f'{zeros:.1%}'} |"
            )
    if evaluation:
        s = evaluation["summary"]
        given = evaluation["input"]
        where = (
            f"random token ids (seed {given.get('seed')})"
            if given.get("kind") == "random"
            else f"the {given['source']}"
            if given.get("source") == "built-in sample"
            else f"`{given.get('source')}`"
        )
        lines += [
            "",
            "## What the model computes",
            "",
            f"Against `{evaluation['reference']}` ({evaluation['runners']['reference']}), this "
            f"model run by {evaluation['runners']['candidate']}, on {evaluation['tokens']:,} "
            f"tokens of {where} (`ryzq eval`):",
            "",
            *_table(
                [
                    (
                        "KL(reference \\|\\| this), mean / max",
                        f"{s['kl_mean']:.4g} / {s['kl_max']:.4g} nats",
                    ),
                    ("top-1 agreement", f"{s['top1_agreement']:.1%}"),
                    (
                        "perplexity, reference / this",
                        f"{s['reference_perplexity']:.4g} / {s['candidate_perplexity']:.4g}",
                    ),
                ]
            ),
        ]
    lines += ["", "## How to load it", ""]
    here = f"{base}-{layout}" if base else "path/to/this/folder"
    if layout == "bitnet":
        lines += [
            "transformers loads it as it is (its `quantization_config` says the layout):",
            "",
            "```python",
            "from transformers import AutoModelForCausalLM",
            f"model = AutoModelForCausalLM.from_pretrained({_quote(here)})",
            "```",
        ]
    else:
        lines += [
            f"`{layout}` is read by ryzq, which turns it back into float weights for any "
            "runtime, or into another layout:",
            "",
            "```sh",
            f"ryzq dequantize {here} float-weights/",
            f"ryzq quantize {here} model.gguf --layout tq2_0   # for llama.cpp",
            "```",
        ]
    if source_body.strip():
        lines += ["", "## The source model's card", "", source_body.strip()]
    return "\n".join(lines) + "\n"


def write_card(
    folder: str | os.PathLike[str],
    report: dict[str, Any],
    *,
    source: str | os.PathLike[str],
    evaluation: dict[str, Any] | None = None,
    hub: Any = None,
) -> Path:
    """Writes the card of the model folder ``folder`` that ryzq made from ``source``, in place
    of the source's card it holds a copy of; it appears whole or not at all. ``hub``: the
    :class:`ryzq.hub.HubModel` the source was fetched as, which names the base model."""
    folder, source = Path(folder), Path(source)
    original = source / "README.md" if source.is_dir() else None
    source_card = None
    if original is not None and original.is_file():
        try:
            # Not UTF-8 (a Latin-1 card): kept, its odd bytes as U+FFFD, rather than lost.
            source_card = original.read_text(encoding="utf-8", errors="replace")
        except OSError:
            source_card = None
    if hub is not None:
        base, label = hub.repo_id, hub.url
    else:
        base, label = (base_model(source) if source.is_dir() else None), None
    text = render_card(
        report, base=base, source_card=source_card, evaluation=evaluation, source=label
    )
    path = folder / "README.md"
    tmp = folder / ".README.md.ryzq-tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
