"""The runtimes that compute a model's logits: transformers for safetensors model folders,
llama.cpp (through llama-cpp-python) for GGUF files. Both are optional; each is imported only
when a model needs it, and its absence is a :class:`RyzqError` that says what to install.

A runner is opened in two steps: first what the model says of itself (its context length),
then, once the window length is settled, the model itself with buffers for that length.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ryzq import _ryzq
from ryzq._ryzq import RyzqError

#: The files one of which a folder's tokenizer is read from.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


class Runner(Protocol):
    #: what runs the model, as the report names it
    name: str
    path: Path
    #: the longest sequence the model was made for
    context_length: int
    vocab_size: int

    def load(self, context: int) -> None: ...
    def has_tokenizer(self) -> bool: ...
    def tokenize(self, text: str) -> tuple[list[int], list[int]]: ...
    def logits(self, ids: list[int]) -> np.ndarray: ...
    def close(self) -> None: ...


def open_runner(path: str | os.PathLike[str], *, threads: int | None) -> Runner:
    """The runner of the model at ``path``: a GGUF file, or a model folder with a
    ``config.json``."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".gguf":
        return LlamaCppRunner(p, threads=threads)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise RyzqError(
                f"{p}: a folder without config.json; ryzq runs model folders and GGUF files"
            )
        return TransformersRunner(p, threads=threads)
    if not p.exists():
        raise RyzqError(f"{p}: no such file or folder")
    raise RyzqError(
        f"{p}: ryzq runs model folders (config.json and safetensors) and .gguf files, not "
        "lone weight files"
    )


def has_tokenizer(folder: Path) -> bool:
    """Whether a model folder has a tokenizer transformers reads."""
    return any((folder / name).is_file() for name in _TOKENIZER_FILES)


def _split_prefix(full: list[int], body: list[int]) -> tuple[list[int], list[int]]:
    """The tokens a tokenizer adds before a text (BOS), and the text's own: ``full`` is the
    text tokenized as the model expects, ``body`` without special tokens. What it adds after
    the text (EOS) is no part of either."""
    if not body:
        return full, []
    for start in range(len(full) - len(body) + 1):
        if full[start : start + len(body)] == body:
            return full[:start], body
    return [], full


@contextlib.contextmanager
def _quiet(transformers: Any) -> Iterator[None]:
    """transformers without its loading bars, notes and warnings (that no GPU is there, that
    a layer runs slowly): ryzq's own progress and report say what happens. Its settings are
    put back afterwards."""
    logging = transformers.utils.logging
    bars, verbosity = logging.is_progress_bar_enabled(), logging.get_verbosity()
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


class TransformersRunner:
    """A model folder run by transformers on the CPU, in float32. A folder in one of ryzq's
    own layouts (``quant_method: ryzq``, which transformers cannot load) is dequantized by
    ryzq into a temporary folder first; transformers' packed BitNet layout runs as it is, in
    transformers' own BitLinear layers."""

    def __init__(self, path: Path, *, threads: int | None) -> None:
        self.path = path
        self.name = "transformers"
        self._threads = threads
        self._model: Any = None
        self._tokenizer: Any = None
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        try:
            config = json.loads((path / "config.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RyzqError(f"{path / 'config.json'}: not readable JSON: {err}") from err
        if not isinstance(config, dict):
            raise RyzqError(f"{path / 'config.json'}: not a JSON object")
        self._config = config
        text = config.get("text_config")
        text = text if isinstance(text, dict) else config
        try:
            self.context_length = int(text.get("max_position_embeddings") or 2048)
            self.vocab_size = int(text.get("vocab_size") or 0)
        except (TypeError, ValueError) as err:
            raise RyzqError(f"{path / 'config.json'}: not a model's config: {err}") from err
        self._folder = path
        quantization = config.get("quantization_config")
        quantization = quantization if isinstance(quantization, dict) else {}
        if quantization.get("quant_method") == "ryzq":
            self.name = "transformers (dequantized by ryzq)"

    def _import(self) -> tuple[Any, Any]:
        try:
            import torch
            import transformers
        except ImportError as err:
            raise RyzqError(
                f"{self.path}: running a model folder needs torch and transformers: "
                "pip install 'ryzq[transformers]'"
            ) from err
        return torch, transformers

    def has_tokenizer(self) -> bool:
        return has_tokenizer(self._folder)

    def load(self, context: int) -> None:
        torch, transformers = self._import()
        if self.name != "transformers":
            from ryzq.files import dequantize_model

            self._scratch = tempfile.TemporaryDirectory(prefix="ryzq-eval-")
            self._folder = Path(self._scratch.name) / "model"
            dequantize_model(self.path, self._folder, dtype="float32", threads=self._threads)
        if self._threads:
            torch.set_num_threads(self._threads)
        try:
            with _quiet(transformers):
                model, info = transformers.AutoModelForCausalLM.from_pretrained(
                    self._folder, dtype=torch.float32, output_loading_info=True
                )
        except Exception as err:  # transformers raises many kinds; each means it cannot run
            raise RyzqError(f"{self.path}: transformers cannot run this model: {err}") from err
        absent = list(info.get("missing_keys", [])) + list(info.get("mismatched_keys", []))
        if absent:
            shown = ", ".join(map(str, absent[:3])) + (", ..." if len(absent) > 3 else "")
            raise RyzqError(
                f"{self.path}: transformers would run this model with {len(absent)} weights "
                f"it lacks or cannot use initialized at random ({shown})"
            )
        self._model = model.eval()
        out = model.get_output_embeddings()
        self.vocab_size = int(out.weight.shape[0]) if out is not None else self.vocab_size

    def tokenize(self, text: str) -> tuple[list[int], list[int]]:
        _, transformers = self._import()
        try:
            with _quiet(transformers):
                tokenizer = transformers.AutoTokenizer.from_pretrained(self._folder)
        except Exception as err:  # as for the model: any failure means no tokenizer
            raise RyzqError(f"{self.path}: transformers cannot read its tokenizer: {err}") from err
        full = list(tokenizer(text)["input_ids"])
        body = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        return _split_prefix(full, body)

    def logits(self, ids: list[int]) -> np.ndarray:
        torch, _ = self._import()
        # Eager: transformers' BitLinear layers are compiled functions, and compiling them
        # needs a C++ compiler and minutes for the same arithmetic.
        with torch.no_grad(), torch.compiler.set_stance("force_eager"):
            out = self._model(torch.tensor([ids])).logits[0]
        logits: np.ndarray = out.float().numpy()
        return logits

    def close(self) -> None:
        self._model = None
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None


class LlamaCppRunner:
    """A GGUF model file run by llama.cpp, through llama-cpp-python."""

    def __init__(self, path: Path, *, threads: int | None) -> None:
        self.path = path
        self.name = "llama.cpp"
        self._threads = threads or os.cpu_count() or 1
        self._llm: Any = None
        header = _ryzq.read_gguf_header(os.fspath(path))
        kvs = {key: value for key, _, value in header["kvs"]}
        arch = kvs.get("general.architecture")
        if arch is None:
            raise RyzqError(
                f"{path}: a GGUF file without general.architecture: tensors only, not a model "
                "llama.cpp runs"
            )
        self.context_length = int(kvs.get(f"{arch}.context_length") or 2048)
        tokens = kvs.get("tokenizer.ggml.tokens")
        self._has_tokenizer = isinstance(tokens, list) and len(tokens) > 0
        if any(ggml_type == "I2_S" for _, ggml_type, _, _ in header["tensors"]):
            raise RyzqError(
                f"{path}: its weights are bitnet.cpp's I2_S, which llama.cpp does not run; "
                "evaluate the model written as tq2_0 or tq1_0, or dequantized into a folder "
                "(ryzq dequantize)"
            )
        self.vocab_size = 0  # llama.cpp's own count, once loaded

    def _import(self) -> Any:
        try:
            import llama_cpp
        except ImportError as err:
            raise RyzqError(
                f"{self.path}: running a GGUF file needs llama-cpp-python: "
                "pip install 'ryzq[llama]'"
            ) from err
        return llama_cpp

    def has_tokenizer(self) -> bool:
        return self._has_tokenizer

    def load(self, context: int) -> None:
        llama_cpp = self._import()
        try:
            self._llm = llama_cpp.Llama(
                model_path=os.fspath(self.path),
                n_ctx=context,
                n_batch=context,
                logits_all=True,
                n_threads=self._threads,
                verbose=False,
            )
        except (ValueError, RuntimeError) as err:
            raise RyzqError(f"{self.path}: llama.cpp cannot load this model: {err}") from err
        self.vocab_size = int(self._llm.n_vocab())

    def tokenize(self, text: str) -> tuple[list[int], list[int]]:
        data = text.encode()
        full = self._llm.tokenize(data, add_bos=True, special=False)
        body = self._llm.tokenize(data, add_bos=False, special=False)
        return _split_prefix(list(full), list(body))

    def logits(self, ids: list[int]) -> np.ndarray:
        self._llm.reset()
        self._llm.eval(ids)
        return np.array(self._llm.scores[: len(ids)], dtype=np.float32)

    def close(self) -> None:
        if self._llm is not None:
            with contextlib.suppress(Exception):
                self._llm.close()
            self._llm = None
