"""The report's HTML page (ryzq.html_report, ``ryzq report``, ``ryzq quantize --html``): read
as HTML by Python, then rendered by a real headless Chromium, which must draw the charts, run
the sorting script and log no error."""

from __future__ import annotations

import copy
import io
import json
import math
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from headless_chromium import find_chromium, load

import ryzq
from ryzq.html_report import load_report, render_html, tensor_kind, write_html
from ryzq.synthetic import synthesize_checkpoint

HOSTILE = "<script>window.__pwned = 1</script>"
HOSTILE_ATTR = '"><img src=x onerror="window.__pwned = 2">'


class _Page(HTMLParser):
    """The tags of a page, its ids and the attributes that could reach outside it."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.scripts = 0
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        for name in ("src", "href", "xlink:href", "action", "poster"):
            if name in attrs:
                self.links.append(attrs[name])
        self.scripts += tag == "script"

    def handle_data(self, data):
        self.text.append(data)


def _run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ryzq", *map(str, args)], capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("model") / "model.safetensors"
    synthesize_checkpoint(src, layers=3, hidden=64, intermediate=128, vocab=128)
    return src


@pytest.fixture(scope="module")
def report(model, tmp_path_factory) -> dict:
    dst = tmp_path_factory.mktemp("out") / "model.ternary.safetensors"
    return ryzq.quantize_file(model, dst).to_dict()


def _eval_section(n: int = 5000) -> dict:
    kl = [0.02 + 0.01 * math.sin(i / 40) + (0.8 if i == 1234 else 0.0) for i in range(n)]
    return {
        "reference": "/models/<ref>",
        "candidate": "/models/candidate.gguf",
        "runners": {"reference": "transformers", "candidate": "llama.cpp"},
        "input": {"kind": "text", "source": "built-in sample", "seed": None},
        "tokens": n + 2,
        "context": 512,
        "windows": 10,
        "predictions": n,
        "vocab_size": 32000,
        "summary": {
            "kl_mean": 0.02,
            "kl_median": 0.019,
            "kl_p99": 0.05,
            "kl_max": 0.82,
            "top1_agreement": 0.93,
            "reference_perplexity": 11.5,
            "candidate_perplexity": 12.25,
            "logit_diff_max": 4.5,
            "logit_diff_mean": 0.25,
        },
        "positions": {
            "index": list(range(n)),
            "kl": kl,
            "top1_agree": [i % 13 != 0 for i in range(n)],
            "reference_nll": [2.0] * n,
            "candidate_nll": [2.1] * n,
            "logit_diff_max": [1.0] * n,
            "logit_diff_mean": [0.2] * n,
        },
        "seconds": {"reference": 3.5, "candidate": 1.25},
    }


def _hostile(report: dict) -> dict:
    report = copy.deepcopy(report)
    quantized = next(t for t in report["tensors"] if t["quantized"])
    quantized["name"] = HOSTILE
    quantized["kept_because"] = HOSTILE_ATTR
    kept = next(t for t in report["tensors"] if not t["quantized"])
    kept["kept_because"] = HOSTILE_ATTR
    report["src"] = HOSTILE_ATTR
    report["warnings"] = [HOSTILE]
    return report


# --- the page as HTML ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("model.layers.3.self_attn.q_proj.weight", "q"),
        ("model.layers.0.self_attn.k_proj.weight", "k"),
        ("model.layers.0.self_attn.v_proj.weight", "v"),
        ("model.layers.0.self_attn.o_proj.weight", "o"),
        ("model.layers.11.mlp.gate_proj.weight", "gate"),
        ("model.layers.11.mlp.up_proj.weight", "up"),
        ("model.layers.11.mlp.down_proj.weight", "down"),
        ("model.layers.1.mlp.experts.7.down_proj.weight", "down"),
        ("blk.3.attn_q.weight", "q"),
        ("blk.3.attn_k.weight", "k"),
        ("blk.3.attn_v.weight", "v"),
        ("blk.3.attn_output.weight", "o"),
        ("blk.3.ffn_gate.weight", "gate"),
        ("blk.3.ffn_up.weight", "up"),
        ("blk.3.ffn_down.weight", "down"),
        ("layers.2.attention.wq.weight", "q"),
        ("layers.2.feed_forward.w2.weight", "down"),
        ("lm_head.weight", "other"),
        ("model.embed_tokens.weight", "other"),
        ("blk.3.attn_qkv.weight", "other"),
        ("", "other"),
    ],
)
def test_the_kind_of_a_tensor_comes_from_its_name(name, kind):
    assert tensor_kind(name) == kind


def test_the_page_is_html_with_its_charts_and_every_tensor(report):
    text = render_html(report)
    page = _Page(text)
    assert text.startswith("<!DOCTYPE html>")
    assert {"nmse", "codes", "scales", "tensors"} <= page.ids
    assert page.tags.count("svg") == 3
    assert page.scripts == 1
    # Nothing from outside the file: no links, no stylesheets, no fonts or images.
    assert page.links == []
    assert "url(" not in text
    assert "@import" not in text
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text
    body = "".join(page.text)
    for t in report["tensors"]:
        assert t["name"] in body
    assert report["src"] in body
    assert f"{report['summary']['pooled_nmse']:.4g}" in body
    # One row per tensor, and one legend entry per kind the model has.
    assert text.count("<tr><td><code>") == len(report["tensors"])
    for kind in ("q", "k", "v", "o", "gate", "up", "down"):
        assert f'data-kind="{kind}"' in text
    assert 'data-kind="other"' not in text


def test_strings_from_the_report_are_escaped(report):
    text = render_html(_hostile(report))
    page = _Page(text)
    assert HOSTILE not in text
    assert HOSTILE_ATTR not in text
    assert page.scripts == 1
    assert "img" not in page.tags
    assert HOSTILE in "".join(page.text)
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in text


def test_a_report_with_no_quantized_tensor(model, tmp_path):
    report = ryzq.quantize_file(model, tmp_path / "kept.safetensors", exclude=["*"]).to_dict()
    assert report["summary"]["quantized_tensors"] == 0
    text = render_html(report)
    page = _Page(text)
    assert {"nmse", "codes", "scales"} <= page.ids
    assert "no quantized tensor" in text
    assert text.count("<tr><td><code>") == len(report["tensors"])


def test_missing_nan_and_odd_values_do_not_break_the_page(report, tmp_path):
    odd = copy.deepcopy(report)
    quantized = [t for t in odd["tensors"] if t["quantized"]]
    quantized[0].update(nmse=None, scale=math.nan, snr_db=math.inf, counts=None, shape="?")
    quantized[1].update(nmse=math.nan, scale=True, max_abs_error="big", layer=None, block=None)
    del quantized[2]["counts"], quantized[2]["nmse"]
    odd["summary"]["nmse"] = {"mean": None}
    odd["summary"]["pooled_nmse"] = math.nan
    odd["layers"] = "not a list"
    odd["warnings"] = None
    _Page(render_html(odd))
    # JSON's NaN, as Python writes it, read back from a file.
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(odd))
    _Page(write_html(path, tmp_path / "odd.html").read_text())
    minimal = {"summary": {}, "tensors": []}
    assert "no quantized tensor" in render_html(minimal)
    _Page(render_html({}))


def test_per_row_scales_are_said_not_drawn(model, tmp_path):
    report = ryzq.quantize_file(
        model, tmp_path / "rows.safetensors", layout="i2", method="optimal", granularity="row"
    ).to_dict()
    assert all(t["scale"] is None for t in report["tensors"])
    text = render_html(report)
    n = report["summary"]["quantized_tensors"]
    assert f"{n:,} of {n:,} quantized tensors have no single scale (granularity row)" in text
    assert "no single scale per tensor with granularity row" in text
    assert 'id="nmse"' in text and "<circle" in text


def test_the_eval_section(report):
    with_eval = dict(report, eval=_eval_section())
    text = render_html(with_eval)
    page = _Page(text)
    assert {"eval-kl", "eval-top1"} <= page.ids
    body = "".join(page.text)
    assert "/models/<ref> (transformers)" in body
    assert "93.0%" in body
    assert "11.500" in body and "12.250" in body
    # 5000 positions drawn as at most 400 points per line; the peak survives in the max.
    lines = text[text.index('id="eval-kl"') :].split("</svg>")[0]
    for points in lines.split('points="')[1:]:
        assert len(points.split('"')[0].split()) <= 400
    assert len(text) < len(render_html(report)) + 60_000
    # Parts of it missing, as an older or newer evaluation might write it.
    for partial in ({}, {"summary": None}, {"positions": {"kl": [None, 0.1]}}):
        _Page(render_html(dict(report, eval=partial)))
    no_eval = render_html(report)
    assert "Evaluation" not in no_eval


def test_a_large_report_stays_small(report):
    big = copy.deepcopy(report)
    quantized = [t for t in report["tensors"] if t["quantized"]]
    big["tensors"] = []
    for layer in range(80):
        for t in quantized[:7]:
            t = dict(t, layer=layer, block=f"model.layers.{layer}")
            t["name"] = t["name"].replace("layers.0.", f"layers.{layer}.")
            big["tensors"].append(t)
    big["layers"] = [{"layer": i, "block": f"model.layers.{i}"} for i in range(80)]
    text = render_html(big)
    assert len(big["tensors"]) == 560
    assert len(text.encode()) < 600_000
    _Page(text)


# --- the command ------------------------------------------------------------------------------


def test_ryzq_report_writes_the_page_beside_the_json(report, tmp_path):
    src = tmp_path / "run.json"
    src.write_text(json.dumps(report))
    result = _run("report", src)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run.html").is_file()
    out = tmp_path / "elsewhere.html"
    result = _run("report", src, "-o", out, "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert out.read_text() == render_html(load_report(src))


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "no such file"),
        ("{not json", "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        ("[1, 2]", "not a ryzq report"),
        ('{"tensors": {}}', "not a ryzq report"),
        ('{"summary": {}}', "not a ryzq report"),
    ],
)
def test_ryzq_report_refuses_what_is_not_a_report(tmp_path, content, says):
    path = tmp_path / "bad.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    result = _run("report", path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"ryzq: error: {path}: {says}"), result.stderr
    assert not (tmp_path / "bad.html").exists()
    with pytest.raises(ryzq.RyzqError, match=says):
        load_report(path)


def test_ryzq_report_refuses_a_folder_and_a_missing_output_folder(report, tmp_path):
    result = _run("report", tmp_path)
    assert result.returncode == 2
    assert f"ryzq: error: {tmp_path}: cannot be read" in result.stderr
    src = tmp_path / "r.json"
    src.write_text(json.dumps(report))
    result = _run("report", src, "-o", tmp_path / "missing" / "r.html")
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    result = _run("report", src, "-o", src)
    assert result.returncode == 2
    assert "would overwrite the report" in result.stderr
    assert json.loads(src.read_text()) == json.loads(json.dumps(report))


def test_quantize_html_writes_the_page(model, tmp_path):
    dst = tmp_path / "q.safetensors"
    page, js = tmp_path / "q.html", tmp_path / "q.json"
    result = _run("quantize", model, dst, "--html", page, "--report", js, "--quiet")
    assert result.returncode == 0, result.stderr
    assert page.read_text() == render_html(load_report(js))


def test_quantize_html_is_checked_before_any_work(model, tmp_path):
    dst = tmp_path / "q.safetensors"
    result = _run("quantize", model, dst, "--html", tmp_path / "missing" / "q.html")
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    result = _run("quantize", model, dst, "--html", model)
    assert result.returncode == 2
    assert "would overwrite the input" in result.stderr
    same = tmp_path / "same"
    result = _run("quantize", model, dst, "--html", same, "--report", same)
    assert result.returncode == 2
    assert "--html and --report name the same file" in result.stderr
    assert not dst.exists()


# --- the page in a browser --------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        why = (
            "no chromium on the PATH (chromium, chromium-browser, google-chrome; or "
            "$RYZQ_CHROMIUM): the browser tests need one (Debian: apt-get install chromium)"
        )
        if os.environ.get("RYZQ_REQUIRE_BROWSER") == "1":
            pytest.fail(f"RYZQ_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    return path


# Evaluated in the page after its scripts ran: what the charts and the table became, and the
# table sorted by NMSE (a click on its header, twice).
_PROBE = """
(() => {
  const table = document.getElementById("tensors");
  const nmse = [...table.tHead.rows[0].cells].findIndex(c => c.textContent === "NMSE");
  const values = () => [...table.tBodies[0].rows]
    .map(r => r.cells[nmse].getAttribute("data-v"))
    .filter(v => v !== "").map(parseFloat);
  const head = table.tHead.rows[0].cells[nmse];
  head.click();
  const ascending = values();
  head.click();
  const descending = values();
  const box = document.getElementById("nmse").getBoundingClientRect();
  return {
    charts: [...document.querySelectorAll("svg.chart")].map(s => s.id),
    circles: document.querySelectorAll("#nmse circle").length,
    bars: document.querySelectorAll("#codes rect[fill]").length,
    sortable: table.getAttribute("data-sortable"),
    sort: head.getAttribute("aria-sort"),
    ascending, descending,
    rows: table.tBodies[0].rows.length,
    pwned: window.__pwned === undefined ? null : window.__pwned,
    nmse_box: [box.left, box.top, box.width, box.height],
  };
})()
"""


def _coloured_pixels(image, box) -> int:
    """Pixels in ``box`` that are clearly a colour, not white, grey or black text."""
    left, top, width, height = (round(v) for v in box)
    region = image.convert("RGB").crop((left, top, left + width, top + height))
    data = region.tobytes()
    pixels = zip(data[0::3], data[1::3], data[2::3], strict=True)
    return sum(1 for rgb in pixels if max(rgb) - min(rgb) > 60)


def test_chromium_renders_the_page_with_no_error(chromium, report, tmp_path):
    from PIL import Image

    path = write_html(dict(_hostile(report), eval=_eval_section()), tmp_path / "page.html")
    page = load(path.as_uri(), expression=_PROBE, width=1280, height=2000, browser=chromium)
    assert page.errors == []
    assert page.requests == [path.as_uri()]
    probe = page.value
    assert probe["pwned"] is None
    assert probe["charts"] == ["nmse", "codes", "scales", "eval-kl", "eval-top1"]
    quantized = [t for t in report["tensors"] if t["quantized"]]
    assert probe["circles"] == len(quantized)
    assert probe["bars"] >= 3 * 3
    assert probe["sortable"] == "ready"
    assert probe["rows"] == len(report["tensors"])
    assert probe["ascending"] == sorted(t["nmse"] for t in quantized)
    assert probe["descending"] == sorted((t["nmse"] for t in quantized), reverse=True)
    assert probe["sort"] == "descending"
    assert 'data-sortable="ready"' in page.dom
    assert page.dom.count("<svg") == 5

    image = Image.open(io.BytesIO(page.png))
    assert image.size == (1280, 2000)
    colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the screenshot is (nearly) one colour"
    assert probe["nmse_box"][2] > 500 and probe["nmse_box"][3] > 150
    assert probe["nmse_box"][1] + probe["nmse_box"][3] <= 2000, "the chart is off the screen"
    assert _coloured_pixels(image, probe["nmse_box"]) > 500, "the NMSE chart drew no lines"


def test_chromium_renders_an_evaluation_alone_with_no_error(chromium, tmp_path):
    path = write_html(_eval_section(), tmp_path / "eval.html")
    probe = "Array.from(document.querySelectorAll('svg')).map(s => s.id)"
    page = load(path.as_uri(), expression=probe, width=1280, height=1200, browser=chromium)
    assert page.errors == []
    assert page.requests == [path.as_uri()]
    assert page.value == ["eval-kl", "eval-top1"]
    assert "<h1>ryzq evaluation</h1>" in page.dom


def test_the_page_reads_alike_with_a_narrow_window(chromium, report, tmp_path):
    path = write_html(report, tmp_path / "page.html")
    probe = "document.getElementById('nmse').getBoundingClientRect().width"
    page = load(path.as_uri(), expression=probe, width=600, height=900, browser=chromium)
    assert page.errors == []
    assert 0 < page.value <= 600


def test_the_error_detection_finds_errors(chromium, tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><body><p>broken</p><script>"
        "console.log('only a log');"
        "setTimeout(() => notAFunction(), 0);"
        "</script></body></html>"
    )
    page = load(bad.as_uri(), browser=chromium)
    assert len(page.errors) == 1, page.errors
    assert "notAFunction" in page.errors[0]

    logged = tmp_path / "logged.html"
    logged.write_text("<script>console.error('said so')</script><p>fine</p>")
    page = load(logged.as_uri(), browser=chromium)
    assert page.errors == ["console.error: said so"]

    fine = tmp_path / "fine.html"
    fine.write_text("<script>console.log('all well')</script><p>fine</p>")
    assert load(fine.as_uri(), browser=chromium).errors == []


def test_the_request_check_finds_a_request_outside_the_file(chromium, tmp_path):
    page_path = tmp_path / "remote.html"
    # A closed port on this machine: refused at once, with no network needed.
    page_path.write_text('<img src="http://127.0.0.1:9/x.png"><p>remote</p>')
    page = load(page_path.as_uri(), browser=chromium)
    assert "http://127.0.0.1:9/x.png" in page.requests
    assert any("x.png" in e for e in page.errors), page.errors


def test_towers_of_blocks_are_told_apart_on_the_axis(report):
    towers = copy.deepcopy(report)
    for t in towers["tensors"]:
        if t["block"] is not None:
            tower = (
                "model.vision_tower.encoder.layers" if t["layer"] else "model.language_model.layers"
            )
            t["block"] = f"{tower}.{t['layer']}"
    towers["layers"] = []
    text = render_html(towers)
    assert ">language_model.0</text>" in text
    assert "n_tower.encoder.1</text>" in text  # shortened from the left, the index kept
