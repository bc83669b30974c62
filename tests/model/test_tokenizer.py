"""ryzq_core::model::tokenizer: the vocabulary of a model folder as GGUF's tokenizer keys, against
gguf-py (SpecialVocab, BpeVocab, SentencePieceVocab, LlamaHfVocab, GGUFWriter), the tokenizers
that transformers and sentencepiece load from the same files, and the converter's rules
(FORMATS §9) where gguf-py has no class for them. Every tokenizer is trained here."""

from __future__ import annotations

import copy
import io
import json
import os
from pathlib import Path

import pytest

from ryzq import RyzqError
from ryzq._ryzq import read_vocab

try:
    import gguf
    import regex
    from gguf.vocab import (
        BpeVocab,
        LlamaHfVocab,
        SentencePieceVocab,
        SpecialVocab,
        bytes_to_unicode,
    )
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import AutoTokenizer
except ImportError:
    if os.environ.get("RYZQ_REQUIRE_INTEROP"):
        raise
    pytest.skip("needs gguf-py, tokenizers and transformers", allow_module_level=True)

try:
    import sentencepiece
except ImportError:
    if os.environ.get("RYZQ_REQUIRE_INTEROP"):
        raise
    sentencepiece = None
needs_sentencepiece = pytest.mark.skipif(sentencepiece is None, reason="needs sentencepiece")

# The split regexes as tokenizer.json holds them (Meta-Llama-3's; Qwen2's), and the ones
# llama.cpp's src/llama-vocab.cpp runs for the names ryzq writes.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA_CPP_REGEX = {
    "llama-bpe": (
        r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|"
        r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    ),
    "qwen2": (
        r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|"
        r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    ),
}

CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's 12:45, isn't it?",
    "Ternary weights: -1, 0 and +1; 1.58 bits each, packed 4 or 5 to a byte.",
    "We'll see. THEY'RE here!\n\n  Indented\tline\n",
    "Grüße aus Köln, ça va? 東京で会いましょう 🚀🦙 — ok",
    "def f(x):\n    return x * 1234567\n",
] * 40

# Text with what the split regexes treat differently: contractions in both cases, runs of
# digits, newlines and spaces, tabs, punctuation runs, emoji, CJK and combining marks.
SPLIT_TEXT = (
    "I'M sure we'LL go; you'd've said 'Re?\n\n \n  \t x  1 22 333 4444 55555 3.14 "
    "...!!! ```code``` 🦙🦙 😶\u200d🌫️ 東京タワー नमस्ते e\u0301 ABC'S  \n"
)

BOS, EOS, EOT = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"


def byte_level(pre_tokenizer) -> Tokenizer:
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    return tok


def llama3_pre():
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def pre_tokenizer_json(pre) -> dict:
    return json.loads(byte_level(pre).to_str())["pre_tokenizer"]


@pytest.fixture(scope="module")
def llama3_json() -> dict:
    """A LLaMA-3-style tokenizer.json: byte-level BPE with LLaMA 3's split, special and added
    tokens (one taking the id of a byte token, as Falcon3's "Ċ" does), a BOS template."""
    tok = byte_level(llama3_pre())
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[BOS, EOS],
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_special_tokens([EOT, "<|reserved_0|>"])
    tok.add_tokens(
        [
            AddedToken("Ċ", normalized=False),
            AddedToken("<unused7>", normalized=False),
            AddedToken("\u2581tool", normalized=False),
            AddedToken("ĠĠ", normalized=False),
            AddedToken("caf\u00e9!", normalized=True),
        ]
    )
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B:1", special_tokens=[(BOS, 0)]
    )
    return json.loads(tok.to_str())


def write_folder(
    root: Path,
    tokenizer: dict | None,
    n_vocab: int,
    tokenizer_config: dict | None = None,
    config: dict | None = None,
) -> Path:
    root.mkdir(exist_ok=True)
    base = {"model_type": "llama", "vocab_size": n_vocab}
    (root / "config.json").write_text(json.dumps(base if config is None else config))
    if tokenizer is not None:
        (root / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
    if tokenizer_config is not None:
        (root / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return root


def vocab_rows(tokenizer: dict, extra: int = 3) -> int:
    vocab = tokenizer["model"]["vocab"]
    ids = [*(vocab.values() if isinstance(vocab, dict) else range(len(vocab)))]
    ids += [t["id"] for t in tokenizer["added_tokens"]]
    return max(ids) + 1 + extra


def added_ids(tokenizer: dict) -> dict[str, int]:
    return {t["content"]: t["id"] for t in tokenizer["added_tokens"]}


def looks_special(text: str) -> bool:
    """FORMATS §9: added tokens the converter makes CONTROL although not marked special."""
    return (
        text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (text.startswith("<|") and text.endswith("|>"))
        or (text.startswith("<\uff5c") and text.endswith("\uff5c>"))
        or (text.startswith("<unused") and text.endswith(">"))
    )


def converter_bpe_tokens(folder: Path, n_vocab: int):
    """The converter's BPE tokens and types (FORMATS §9, get_vocab_base), computed with the
    tokenizer transformers loads from the folder: ids without a token are [PAD{id}] UNUSED; an
    added token that is not normalized is encoded and decoded back; added tokens are CONTROL
    when special or special-looking, else USER_DEFINED with ▁ as a space; the rest NORMAL."""
    hf = AutoTokenizer.from_pretrained(folder)
    by_id = {i: t for t, i in hf.get_vocab().items()}
    added = hf.added_tokens_decoder
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        text = by_id[i]
        if i in added:
            if not added[i].normalized:
                text = hf.decode(hf.encode(text, add_special_tokens=False))
            if added[i].special or looks_special(text):
                types.append(gguf.TokenType.CONTROL)
            else:
                text = text.replace("\u2581", " ")
                types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(text)
    return tokens, types


def test_byte_level_bpe_matches_the_converter_and_gguf_py(tmp_path, llama3_json):
    n = vocab_rows(llama3_json)
    folder = write_folder(
        tmp_path / "m",
        llama3_json,
        n,
        {"bos_token": BOS, "eos_token": EOT, "chat_template": "{{ bos_token }}{{ m }}"},
    )
    vocab = read_vocab(str(folder), n)

    assert vocab["model"] == BpeVocab.tokenizer_model == "gpt2"
    assert vocab["pre"] == "llama-bpe"
    assert vocab["scores"] is None
    tokens, types = converter_bpe_tokens(folder, n)
    assert vocab["tokens"] == tokens
    assert vocab["token_types"] == [int(t) for t in types]
    # The byte token "Ċ" re-added as a token is the newline llama.cpp matches; "ĠĠ" two spaces.
    assert vocab["tokens"][llama3_json["model"]["vocab"]["Ċ"]] == "\n"
    assert "  " in vocab["tokens"] and " tool" in vocab["tokens"]

    # gguf-py's BpeVocab for the texts of the base vocabulary's normal tokens.
    base = [text for text, _, _ in BpeVocab(folder).bpe_tokens()]
    normal = [i for i, k in enumerate(vocab["token_types"]) if k == gguf.TokenType.NORMAL]
    assert len(normal) > 300
    assert [vocab["tokens"][i] for i in normal] == [base[i] for i in normal]

    special = SpecialVocab(folder, load_merges=True)
    assert vocab["merges"] == special.merges
    ids = added_ids(llama3_json)
    assert vocab["special_ids"] == special.special_token_ids == {"bos": 0, "eos": ids[EOT]}
    assert (vocab["add_bos"], vocab["add_sep"]) == (True, False)
    assert {k: v for k, v in special.add_special_token.items()} == {"bos": True, "sep": False}
    assert vocab["add_eos"] is None
    assert vocab["chat_template"] == special.chat_template


def test_merges_as_strings_and_as_pairs_with_spaces(tmp_path, llama3_json):
    pairs = copy.deepcopy(llama3_json)
    assert isinstance(pairs["model"]["merges"][0], list)
    pairs["model"]["merges"].append(["a b", " c"])
    strings = copy.deepcopy(llama3_json)
    strings["model"]["merges"] = [" ".join(m) for m in strings["model"]["merges"]]
    n = vocab_rows(llama3_json)
    from_pairs = write_folder(tmp_path / "pairs", pairs, n)
    from_strings = write_folder(tmp_path / "strings", strings, n)

    merges = read_vocab(str(from_pairs), n)["merges"]
    assert merges == SpecialVocab(from_pairs, load_merges=True).merges
    assert merges[-1] == "a\u0120b \u0120c"
    assert read_vocab(str(from_strings), n)["merges"] == merges[:-1]
    assert merges[:-1] == SpecialVocab(from_strings, load_merges=True).merges


@pytest.mark.parametrize(
    ("name", "pre"),
    [
        ("llama-bpe", llama3_pre),
        (
            "qwen2",
            lambda: pre_tokenizers.Sequence(
                [
                    pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
                ]
            ),
        ),
        ("gpt-2", lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)),
        (
            "gpt-2",
            lambda: pre_tokenizers.Sequence(
                [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
            ),
        ),
    ],
)
def test_known_pre_tokenizers_get_their_llama_cpp_names(tmp_path, llama3_json, name, pre):
    tokenizer = copy.deepcopy(llama3_json)
    tokenizer["pre_tokenizer"] = pre_tokenizer_json(pre())
    n = vocab_rows(tokenizer)
    assert read_vocab(str(write_folder(tmp_path / "m", tokenizer, n)), n)["pre"] == name


@pytest.mark.parametrize("name", sorted(LLAMA_CPP_REGEX))
def test_the_named_regex_splits_text_as_the_tokenizer_does(tmp_path, llama3_json, name):
    split = {"llama-bpe": LLAMA3_SPLIT, "qwen2": QWEN2_SPLIT}[name]
    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer = copy.deepcopy(llama3_json)
    tokenizer["pre_tokenizer"] = pre_tokenizer_json(pre)
    n = vocab_rows(tokenizer)
    assert read_vocab(str(write_folder(tmp_path / "m", tokenizer, n)), n)["pre"] == name
    # What llama.cpp runs for that name splits the text into the pieces tokenizers makes.
    to_chars = bytes_to_unicode()
    runtime = [
        "".join(to_chars[b] for b in piece.encode())
        for piece in regex.findall(LLAMA_CPP_REGEX[name], SPLIT_TEXT)
    ]
    assert runtime == [piece for piece, _ in pre.pre_tokenize_str(SPLIT_TEXT)]


@pytest.mark.parametrize(
    "pre",
    [
        lambda: pre_tokenizers.Whitespace(),
        lambda: pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True),
        lambda: pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        ),
        lambda: pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(r"\p{N}{1,3}"), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        ),
        lambda: pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="removed", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        ),
    ],
)
def test_an_unknown_pre_tokenizer_is_refused_with_the_known_ones(tmp_path, llama3_json, pre):
    tokenizer = copy.deepcopy(llama3_json)
    tokenizer["pre_tokenizer"] = pre_tokenizer_json(pre())
    n = vocab_rows(tokenizer)
    folder = write_folder(tmp_path / "m", tokenizer, n)
    with pytest.raises(RyzqError, match="none ryzq knows") as e:
        read_vocab(str(folder), n)
    assert e.value.kind == "bad_format"
    assert e.value.path == str(folder / "tokenizer.json")
    for known in ("llama-bpe", "qwen2", "gpt-2"):
        assert known in str(e.value)


def test_vocab_is_padded_to_the_embedding_and_checked_against_it(tmp_path, llama3_json):
    n = vocab_rows(llama3_json, extra=5)
    folder = write_folder(tmp_path / "m", llama3_json, n)
    vocab = read_vocab(str(folder), n)
    assert len(vocab["tokens"]) == len(vocab["token_types"]) == n
    assert vocab["tokens"][-5:] == [f"[PAD{i}]" for i in range(n - 5, n)]
    assert vocab["token_types"][-5:] == [gguf.TokenType.UNUSED] * 5

    with pytest.raises(RyzqError, match="vocab_size is") as e:
        read_vocab(str(folder), n - 1)
    assert (e.value.kind, e.value.path) == ("bad_format", str(folder / "config.json"))

    no_size = write_folder(tmp_path / "nosize", llama3_json, n, config={"model_type": "llama"})
    with pytest.raises(RyzqError, match="beyond the embedding") as e:
        read_vocab(str(no_size), n - 6)
    assert (e.value.kind, e.value.path) == ("bad_format", str(no_size / "tokenizer.json"))


def test_empty_token_text_is_written_as_llama_cpp_reads_it(tmp_path, llama3_json):
    tokenizer = copy.deepcopy(llama3_json)
    n = vocab_rows(tokenizer)
    tokenizer["model"]["vocab"][""] = n - 1
    vocab = read_vocab(str(write_folder(tmp_path / "m", tokenizer, n)), n)
    assert vocab["tokens"][n - 1] == f"[EMPTY_{n - 1}]"


def test_a_token_twice_is_refused(tmp_path, llama3_json):
    tokenizer = copy.deepcopy(llama3_json)
    n = vocab_rows(tokenizer)
    # An added, non-normalized "ĠĠ" decodes to two spaces; a second token spelled so collides.
    tokenizer["model"]["vocab"]["  "] = n - 1
    folder = write_folder(tmp_path / "m", tokenizer, n)
    with pytest.raises(RyzqError, match="both") as e:
        read_vocab(str(folder), n)
    assert e.value.kind == "bad_format"


# SpecialVocab's rules on post-processors, tokenizer configs and config ids: each case is
# (post_processor, tokenizer_config or None, config additions).
TEMPLATE_CASES = {
    "bos-template": (
        {"single": f"{BOS} $A", "pair": f"{BOS} $A {BOS} $B:1"},
        {"bos_token": BOS, "eos_token": EOS},
        {},
    ),
    "bos-eos-template": (
        {"single": f"{BOS} $A {EOS}", "pair": f"{BOS} $A {EOS} $B:1 {EOS}:1"},
        {"bos_token": BOS, "eos_token": EOS},
        {},
    ),
    "template-ends-with-another-eos": (
        {"single": f"{BOS} $A {EOT}", "pair": f"{BOS} $A {EOT} $B:1 {EOT}:1"},
        {"bos_token": BOS, "eos_token": EOS},
        {},
    ),
    "no-tokenizer-config": (
        {"single": f"{BOS} $A {EOS}", "pair": f"{BOS} $A $B:1 {EOS}:1"},
        None,
        {},
    ),
    "separator-in-pair": (
        {"single": "$A", "pair": f"$A {EOT} $B:1"},
        {"bos_token": BOS, "eos_token": EOS, "sep_token": EOT},
        {},
    ),
    "template-starts-with-another-token": (
        {"single": f"{EOS} $A", "pair": f"{EOS} $A $B:1"},
        {"bos_token": BOS, "eos_token": EOS, "add_eos_token": False},
        {},
    ),
    # An AddedToken dict is no template token to SpecialVocab, but its content is an id.
    "config-overrides": (
        {"single": f"{BOS} $A", "pair": f"{BOS} $A $B:1"},
        {
            "bos_token": {"content": BOS, "__type": "AddedToken"},
            "eos_token": EOT,
            "add_eos_token": True,
        },
        {"pad_token_id": 1, "eos_token_id": 1, "unk_token_id": 5},
    ),
    "add-flags-override-the-template": (
        {"single": f"{BOS} $A {EOS}", "pair": f"{BOS} $A $B:1 {EOS}:1"},
        {"bos_token": BOS, "eos_token": EOS, "add_bos_token": False, "add_eos_token": False},
        {},
    ),
    "ids-from-config-and-text-config": (
        None,
        {"bos_token": "<s>", "chat_template": None},
        {"bos_token_id": 1, "text_config": {"eos_token_id": 0, "pad_token_id": 2}},
    ),
}


def template_processing(tokenizer: dict, single: str, pair: str):
    ids = added_ids(tokenizer)
    specials = [(t, ids[t]) for t in (BOS, EOS, EOT) if t in single + pair]
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)


@pytest.mark.parametrize("case", sorted(TEMPLATE_CASES))
def test_special_ids_and_flags_follow_special_vocab(tmp_path, llama3_json, case):
    post, tokenizer_config, config_extra = TEMPLATE_CASES[case]
    tokenizer = copy.deepcopy(llama3_json)
    if post is None:
        tokenizer["post_processor"] = None
    else:
        tok = Tokenizer.from_str(json.dumps(llama3_json))
        tok.post_processor = processors.Sequence(
            [processors.ByteLevel(trim_offsets=False), template_processing(tokenizer, **post)]
        )
        tokenizer["post_processor"] = json.loads(tok.to_str())["post_processor"]
    n = vocab_rows(tokenizer)
    config = {"model_type": "llama", "vocab_size": n, **config_extra}
    folder = write_folder(tmp_path / "m", tokenizer, n, tokenizer_config, config)
    vocab = read_vocab(str(folder), n)

    special = SpecialVocab(folder, load_merges=True)
    # cls has no GGUF key; gguf-py's add_to_gguf skips it as well.
    expected_ids = {t: i for t, i in special.special_token_ids.items() if t != "cls"}
    assert vocab["special_ids"] == expected_ids
    for flag in ("bos", "eos", "sep"):
        assert vocab[f"add_{flag}"] == special.add_special_token.get(flag), flag
    assert vocab["chat_template"] == special.chat_template
    if case == "template-ends-with-another-eos":
        assert expected_ids["eos"] == added_ids(llama3_json)[EOT]
        assert expected_ids["eot"] == added_ids(llama3_json)[EOS]


def test_roberta_post_processor_follows_special_vocab(tmp_path, llama3_json):
    tokenizer = copy.deepcopy(llama3_json)
    tokenizer["post_processor"] = {
        "type": "RobertaProcessing",
        "sep": [EOS, 1],
        "cls": [BOS, 0],
        "trim_offsets": True,
        "add_prefix_space": False,
    }
    n = vocab_rows(tokenizer)
    folder = write_folder(tmp_path / "m", tokenizer, n, {"unk_token": EOT})
    vocab = read_vocab(str(folder), n)
    special = SpecialVocab(folder, load_merges=True)
    eot = added_ids(llama3_json)[EOT]
    assert special.special_token_ids == {"unk": eot, "sep": 1, "cls": 0}
    assert vocab["special_ids"] == {"unk": eot, "sep": 1}
    assert (vocab["add_bos"], vocab["add_eos"], vocab["add_sep"]) == (True, True, True)


def test_special_ids_beyond_the_embedding_give_way_to_later_sources(tmp_path, llama3_json):
    n = vocab_rows(llama3_json)
    config = {"vocab_size": n, "bos_token_id": n + 10, "eos_token_id": 1}
    folder = write_folder(tmp_path / "m", llama3_json, n, {"eos_token": BOS}, config)
    special = SpecialVocab(folder, n_vocab=n)
    assert read_vocab(str(folder), n)["special_ids"] == special.special_token_ids
    assert special.special_token_ids["eos"] == 0
    assert "bos" not in special.special_token_ids
    config["eos_token_id"] = -1
    folder = write_folder(tmp_path / "neg", llama3_json, n, {}, config)
    with pytest.raises(RyzqError, match="negative") as e:
        read_vocab(str(folder), n)
    assert e.value.path == str(folder / "config.json")


def gguf_chat_template_keys(template) -> dict:
    writer = gguf.GGUFWriter(path=None, arch="llama")
    writer.add_chat_template(template)
    return {k: v.value for k, v in writer.kv_data[0].items() if k.startswith("tokenizer.chat")}


def ryzq_chat_template_keys(vocab: dict) -> dict:
    keys = {}
    names = [name for name, _ in vocab["named_chat_templates"]]
    for name, template in vocab["named_chat_templates"]:
        keys[f"tokenizer.chat_template.{name}"] = template
    if names:
        keys["tokenizer.chat_templates"] = names
    if vocab["chat_template"] is not None:
        keys["tokenizer.chat_template"] = vocab["chat_template"]
    return keys


def test_chat_templates_from_every_source(tmp_path, llama3_json):
    n = vocab_rows(llama3_json)
    named = [
        {"name": "default", "template": "{{ d }}"},
        {"name": "tool use", "template": "{{ t }}"},
        {"name": "rag", "template": "{{ r }}"},
    ]
    in_config = write_folder(tmp_path / "named", llama3_json, n, {"chat_template": named})
    vocab = read_vocab(str(in_config), n)
    assert SpecialVocab(in_config).chat_template == named
    keys = ryzq_chat_template_keys(vocab)
    expected = gguf_chat_template_keys(named)
    # gguf-py keeps the names in a set, so their order is its hash order.
    assert sorted(keys.pop("tokenizer.chat_templates")) == sorted(
        expected.pop("tokenizer.chat_templates")
    )
    assert keys == expected

    jinja = write_folder(tmp_path / "jinja", llama3_json, n, {"bos_token": BOS})
    (jinja / "chat_template.jinja").write_text("{{ main }}")
    (jinja / "chat_template.json").write_text(json.dumps({"chat_template": "{{ json }}"}))
    assert read_vocab(str(jinja), n)["chat_template"] == SpecialVocab(jinja).chat_template
    (jinja / "additional_chat_templates").mkdir()
    (jinja / "additional_chat_templates" / "tools.jinja").write_text("{{ tools }}")
    vocab = read_vocab(str(jinja), n)
    assert ryzq_chat_template_keys(vocab) == gguf_chat_template_keys(
        SpecialVocab(jinja).chat_template
    )

    only_json = write_folder(tmp_path / "json", llama3_json, n, {"bos_token": BOS})
    (only_json / "chat_template.json").write_text(json.dumps({"chat_template": "{{ json }}"}))
    assert read_vocab(str(only_json), n)["chat_template"] == "{{ json }}"
    assert SpecialVocab(only_json).chat_template == "{{ json }}"

    # Without a tokenizer_config.json SpecialVocab stops before the template files;
    # transformers reads them regardless, and so does ryzq.
    bare = write_folder(tmp_path / "bare", llama3_json, n)
    (bare / "chat_template.jinja").write_text("{{ main }}")
    assert SpecialVocab(bare).chat_template is None
    assert read_vocab(str(bare), n)["chat_template"] == "{{ main }}"
    assert AutoTokenizer.from_pretrained(bare).chat_template == "{{ main }}"


def test_add_prefix_space_from_the_tokenizer_config(tmp_path, llama3_json):
    n = vocab_rows(llama3_json)
    folder = write_folder(tmp_path / "m", llama3_json, n, {"add_prefix_space": False})
    assert read_vocab(str(folder), n)["add_space_prefix"] is False
    folder = write_folder(tmp_path / "none", llama3_json, n, {})
    assert read_vocab(str(folder), n)["add_space_prefix"] is None


# Tokenizers ryzq does not write, each refused with what it is.
def wordpiece_json() -> dict:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=200))
    return json.loads(tok.to_str())


def unigram_json() -> dict:
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=200))
    return json.loads(tok.to_str())


def byte_fallback_json() -> dict:
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    specials = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256))]
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=specials))
    return json.loads(tok.to_str())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (wordpiece_json, "a WordPiece tokenizer"),
        (unigram_json, "a Unigram tokenizer"),
        (byte_fallback_json, "byte fallback"),
    ],
)
def test_tokenizer_json_of_another_kind_is_refused(tmp_path, make, message):
    tokenizer = make()
    n = vocab_rows(tokenizer)
    folder = write_folder(tmp_path / "m", tokenizer, n)
    with pytest.raises(RyzqError, match=message) as e:
        read_vocab(str(folder), n)
    assert (e.value.kind, e.value.path) == ("bad_format", str(folder / "tokenizer.json"))
    if make is byte_fallback_json:
        # What gguf-py reads as a Llama BPE (LlamaHfVocab), written with placeholder scores
        # that llama.cpp's SentencePiece merging would rank by.
        assert LlamaHfVocab(folder).vocab_size == n - 3


def test_missing_and_unreadable_tokenizer_files(tmp_path, llama3_json):
    n = vocab_rows(llama3_json)
    none = write_folder(tmp_path / "none", None, n)
    with pytest.raises(RyzqError, match=r"no tokenizer\.model and no tokenizer\.json") as e:
        read_vocab(str(none), n)
    assert (e.value.kind, e.value.path) == ("bad_format", str(none))

    broken = write_folder(tmp_path / "broken", None, n)
    (broken / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": {')
    with pytest.raises(RyzqError, match="not valid JSON") as e:
        read_vocab(str(broken), n)
    assert (e.value.kind, e.value.path) == ("bad_format", str(broken / "tokenizer.json"))

    config = write_folder(tmp_path / "config", llama3_json, n)
    (config / "tokenizer_config.json").write_text("[1, 2]")
    with pytest.raises(RyzqError, match="not a JSON object") as e:
        read_vocab(str(config), n)
    assert e.value.path == str(config / "tokenizer_config.json")


# SentencePiece: tokenizer.model trained here, against SentencePieceVocab and the converter.


def train_sentencepiece(model_type: str = "bpe", **options) -> bytes:
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_writer=model,
        vocab_size=options.pop("vocab_size", 420),
        model_type=model_type,
        minloglevel=2,
        **options,
    )
    return model.getvalue()


@pytest.fixture(scope="module")
def spm_model() -> bytes:
    if sentencepiece is None:
        pytest.skip("needs sentencepiece")
    return train_sentencepiece(
        byte_fallback=True,
        user_defined_symbols=["<tool>"],
        control_symbols=["<ctrl>"],
    )


def spm_folder(root: Path, model: bytes, n_vocab: int, **files) -> Path:
    write_folder(root, None, n_vocab, files.pop("tokenizer_config", None))
    (root / "tokenizer.model").write_bytes(model)
    for name, content in files.items():
        (root / f"{name}.json").write_text(json.dumps(content))
    return root


def converter_sentencepiece(folder: Path, n_vocab: int):
    """The converter's SentencePiece tokens, scores and types (FORMATS §9): n_vocab slots of
    [PAD{id}] scored -10000 UNUSED; the pieces with sentencepiece's unknown / control / unused /
    byte checks; added_tokens.json as USER_DEFINED; added_tokens_decoder as CONTROL when special
    or special-looking, else USER_DEFINED with ▁ as a space; added tokens scored -1000."""
    sp = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    scores = [-10000.0] * n_vocab
    types = [gguf.TokenType.UNUSED] * n_vocab
    for i in range(sp.vocab_size()):
        kind = gguf.TokenType.NORMAL
        for check, typ in (
            (sp.IsUnknown, gguf.TokenType.UNKNOWN),
            (sp.IsControl, gguf.TokenType.CONTROL),
            (sp.IsUnused, gguf.TokenType.UNUSED),
            (sp.IsByte, gguf.TokenType.BYTE),
        ):
            if check(i):
                kind = typ
                break
        tokens[i], scores[i], types[i] = sp.IdToPiece(i), sp.GetScore(i), kind
    added = folder / "added_tokens.json"
    for text, i in (json.loads(added.read_text()) if added.is_file() else {}).items():
        tokens[i], scores[i], types[i] = text, -1000.0, gguf.TokenType.USER_DEFINED
    config = folder / "tokenizer_config.json"
    settings = json.loads(config.read_text()) if config.is_file() else {}
    decoder = settings.get("added_tokens_decoder", {})
    for i, token in decoder.items():
        text, i = token["content"], int(i)
        if token.get("special") or looks_special(text):
            types[i] = gguf.TokenType.CONTROL
        else:
            text, types[i] = text.replace("\u2581", " "), gguf.TokenType.USER_DEFINED
        tokens[i], scores[i] = text, -1000.0
    return tokens, scores, types


@needs_sentencepiece
def test_sentencepiece_matches_gguf_py_and_the_converter(tmp_path, spm_model):
    sp = sentencepiece.SentencePieceProcessor(model_proto=spm_model)
    pieces = sp.vocab_size()
    n = pieces + 6
    decoder = {
        "0": {"content": "<unk>", "special": True},
        "1": {"content": "<s>", "special": True},
        "2": {"content": "</s>", "special": True},
        str(pieces + 1): {"content": "<|im_start|>", "special": False},
        str(pieces + 2): {"content": "\u2581user\u2581name", "special": False},
    }
    folder = spm_folder(
        tmp_path / "m",
        spm_model,
        n,
        tokenizer_config={"added_tokens_decoder": decoder, "bos_token": "<s>"},
        added_tokens={"<extra>": pieces},
    )
    vocab = read_vocab(str(folder), n)

    assert vocab["model"] == SentencePieceVocab.tokenizer_model == "llama"
    assert vocab["pre"] == "default"
    assert vocab["merges"] == []
    # gguf-py's pieces, where added_tokens_decoder does not replace them.
    base = list(SentencePieceVocab(folder).sentencepiece_tokens())
    kept = [i for i in range(pieces) if str(i) not in decoder]
    assert [vocab["tokens"][i] for i in kept] == [base[i][0].decode() for i in kept]
    assert [vocab["scores"][i] for i in kept] == [base[i][1] for i in kept]
    assert [vocab["token_types"][i] for i in kept] == [int(base[i][2]) for i in kept]
    assert {gguf.TokenType.BYTE, gguf.TokenType.CONTROL} <= set(vocab["token_types"])
    # <unk>, UNKNOWN in the model, is CONTROL once added_tokens_decoder marks it special.
    assert (base[0][2], vocab["token_types"][0]) == (gguf.TokenType.UNKNOWN, 3)

    tokens, scores, types = converter_sentencepiece(folder, n)
    assert vocab["tokens"] == tokens
    assert vocab["scores"] == scores
    assert vocab["token_types"] == [int(t) for t in types]
    added = ["<extra>", "<|im_start|>", " user name", f"[PAD{n - 3}]"]
    assert vocab["tokens"][pieces : pieces + 4] == added

    special = SpecialVocab(folder, n_vocab=n)
    assert vocab["special_ids"] == special.special_token_ids
    assert vocab["add_space_prefix"] is True


@needs_sentencepiece
def test_sentencepiece_special_ids_come_from_config(tmp_path, spm_model):
    pieces = sentencepiece.SentencePieceProcessor(model_proto=spm_model).vocab_size()
    folder = spm_folder(tmp_path / "m", spm_model, pieces)
    config = {"vocab_size": pieces, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": pieces}
    (folder / "config.json").write_text(json.dumps(config))
    special = SpecialVocab(folder, n_vocab=pieces)
    vocab = read_vocab(str(folder), pieces)
    assert vocab["special_ids"] == special.special_token_ids
    assert special.special_token_ids == {"bos": 1, "eos": 2}
    # Nothing added: the model's own types, <unk> UNKNOWN among them.
    tokens, scores, types = converter_sentencepiece(folder, pieces)
    assert (vocab["tokens"], vocab["scores"]) == (tokens, scores)
    assert vocab["token_types"] == [int(t) for t in types]
    assert vocab["token_types"][0] == gguf.TokenType.UNKNOWN


@needs_sentencepiece
def test_add_space_prefix_is_the_models_dummy_prefix(tmp_path):
    model = train_sentencepiece(add_dummy_prefix=False, vocab_size=300)
    sp = sentencepiece.SentencePieceProcessor(model_proto=model)
    n = sp.vocab_size()
    assert not sp.encode("hello", out_type=str)[0].startswith("\u2581")
    assert read_vocab(str(spm_folder(tmp_path / "m", model, n)), n)["add_space_prefix"] is False
    # tokenizer_config.json's add_prefix_space wins, as the converter writes it.
    folder = spm_folder(tmp_path / "c", model, n, tokenizer_config={"add_prefix_space": True})
    assert read_vocab(str(folder), n)["add_space_prefix"] is True


@needs_sentencepiece
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_sentencepiece_model_is_refused_as_sentencepiece_refuses_it(
    tmp_path, spm_model, damage
):
    model = {
        "truncated": spm_model[: len(spm_model) // 2],
        "garbage": bytes(range(256)) * 8,
        "empty": b"",
    }[damage]
    with pytest.raises(RuntimeError):
        sentencepiece.SentencePieceProcessor().LoadFromSerializedProto(model)
    folder = spm_folder(tmp_path / "m", model, 500)
    with pytest.raises(RyzqError, match="not a SentencePiece model") as e:
        read_vocab(str(folder), 500)
    assert (e.value.kind, e.value.path) == ("bad_format", str(folder / "tokenizer.model"))


@needs_sentencepiece
def test_sentencepiece_errors(tmp_path, spm_model):
    pieces = sentencepiece.SentencePieceProcessor(model_proto=spm_model).vocab_size()
    folder = spm_folder(tmp_path / "small", spm_model, pieces - 1)
    with pytest.raises(RyzqError, match="more than the embedding") as e:
        read_vocab(str(folder), pieces - 1)
    assert e.value.path == str(folder / "tokenizer.model")

    unigram = train_sentencepiece("unigram", vocab_size=200, hard_vocab_limit=False)
    n = sentencepiece.SentencePieceProcessor(model_proto=unigram).vocab_size()
    folder = spm_folder(tmp_path / "unigram", unigram, n)
    with pytest.raises(RyzqError, match="Unigram") as e:
        read_vocab(str(folder), n)
    assert (e.value.kind, e.value.path) == ("bad_format", str(folder / "tokenizer.model"))

    folder = spm_folder(tmp_path / "beyond", spm_model, pieces, added_tokens={"<x>": pieces})
    with pytest.raises(RyzqError, match="beyond the embedding") as e:
        read_vocab(str(folder), pieces)
    assert e.value.path == str(folder / "added_tokens.json")

    # An added token spelled like a piece: llama.cpp would abort on the vocabulary.
    folder = spm_folder(tmp_path / "twice", spm_model, pieces + 1, added_tokens={"<tool>": pieces})
    with pytest.raises(RyzqError, match="both"):
        read_vocab(str(folder), pieces + 1)
