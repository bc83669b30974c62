"""The bytes of a fixed set of outputs, recorded: a change of the code that moves any output
byte (a file, a model folder, a dequantized file) fails here and must say why."""

import hashlib
import json

import pytest

import ryzq
from checkpoints import tiny_model, write

RUNS = {
    "bitnet": {"layout": "bitnet"},
    "bitnet-autobitlinear": {"layout": "bitnet", "linear_class": "autobitlinear"},
    "bitnet-optimal": {"layout": "bitnet", "method": "optimal"},
    "i2": {"layout": "i2"},
    "i2-row-absmax": {"layout": "i2", "method": "absmax", "granularity": "row"},
    "t1-group-optimal": {"layout": "t1", "method": "optimal", "granularity": "group:128"},
    "tq2_0": {"layout": "tq2_0"},
    "tq2_0-absmax": {"layout": "tq2_0", "method": "absmax"},
    "tq1_0": {"layout": "tq1_0"},
    "tq1_0-row-optimal": {"layout": "tq1_0", "method": "optimal", "granularity": "row"},
    "q2_0": {"layout": "q2_0"},
    "q2_0-absmax": {"layout": "q2_0", "method": "absmax"},
    "i2_s": {"layout": "i2_s"},
    "i2_s-absmax": {"layout": "i2_s", "method": "absmax"},
    "i2_s_arm": {"layout": "i2_s_arm"},
}

EXPECTED = {
    "file bitnet": "440bf0a2079a67e8bb59067e5cfdaa835b779cc41f9092851a78f8c808232761",
    "dequantize bitnet": "8ad37b389da598479068689c2a0b62c335217911dfece743dc803d96d6bf47c2",
    "file bitnet-autobitlinear": "c2a9e9043612d4cf79128623c35e086f9a8aaa6f16e695f8ba942ed295fdfdf5",
    "dequantize bitnet-autobitlinear": "e8c87a8140015e43d89168ba265e15330edb75a817cc5719d9524faebb6bbde1",
    "file bitnet-optimal": "d660a8be07ed804a17437a5afd464b6ea5452927f8f5f0ad7671f22c5e44c7b8",
    "dequantize bitnet-optimal": "88fdda6829126b133cd3124e84024413e02a995660d23f654e4f2e2bbed96a31",
    "file i2": "42526df27cadf2173f855b0ac3d49f8ace4db6539cdf627f551d47d06a03ce6b",
    "dequantize i2": "ee989f2eaed5e71b2c6e06f9224adfd52b298c5686d69d183698d2795041201e",
    "file i2-row-absmax": "d1c84f55c4fe0a9a47f0135a9b48392b35e1ccd8e3970d4d43607465e5892759",
    "dequantize i2-row-absmax": "0594bf891708098b96044985c552e6f75310ed3d4549a4e09b29a947e6ce330a",
    "file t1-group-optimal": "07af48d16edb26e28f846f07418521ea0a2b93f1cd89bfb057db117de7ac5d5c",
    "dequantize t1-group-optimal": "a202898d0d848c811bfeb9762ca8709be0fc947a0aee24b30fa25fa6a040f2fe",
    "file tq2_0": "34974464a5775ba37282cfe3a97f3941d78a845c0272f2734d905346d7e41c53",
    "dequantize tq2_0": "ee989f2eaed5e71b2c6e06f9224adfd52b298c5686d69d183698d2795041201e",
    "file tq2_0-absmax": "d36f3f1dd4fb027ee4075f8cda76dacc98dcb0b13519f894bf7494e6c4ad55ab",
    "dequantize tq2_0-absmax": "42664faacf3c6b08139101c300d2ad8175fecf09316d725632aa3383ab75cd5b",
    "file tq1_0": "231535395da563cb98983f48c8c16def12a81710626f9a6d3a7cad5f4e91b177",
    "dequantize tq1_0": "ee989f2eaed5e71b2c6e06f9224adfd52b298c5686d69d183698d2795041201e",
    "file tq1_0-row-optimal": "1f57a40337ae9260e83e257ab9f3b5b35446d785ca7a166d52d0280294956e4f",
    "dequantize tq1_0-row-optimal": "bc43dbb0e9e7e1899f59d5e561bd50faa1905f56f02d9d62b187a2aa57b8a935",
    "file q2_0": "f011f7edef0587fd56729083e22ba268caff4d4add279927cbd0c8161a236359",
    "dequantize q2_0": "ee989f2eaed5e71b2c6e06f9224adfd52b298c5686d69d183698d2795041201e",
    "file q2_0-absmax": "d21d87da1b785e5a00ac1d8cb0b421c53cd818a77ccf75afc2369e967168e503",
    "dequantize q2_0-absmax": "96edeb64770289fbf75260f878da42599b1702f1b023bf88d839a8d22fef7c73",
    "file i2_s": "502c009e33079ef3f6fa66334767d5b6f1901e9489848a761d9a8e40a2138fe6",
    "dequantize i2_s": "ee989f2eaed5e71b2c6e06f9224adfd52b298c5686d69d183698d2795041201e",
    "file i2_s-absmax": "63c5c8a329612c63e33f4741a947994f1901946305e4f966e6614fb5f31ee089",
    "dequantize i2_s-absmax": "1af5686b6dc22a00563e6feadd8dafa0527900bc28f67141300e005b6e7cc111",
    "file i2_s_arm": "3aad302a7f99366618e58d752d545bb6fca32170c1895a8930cd002829c45762",
    "dequantize i2_s_arm": "ee989f2eaed5e71b2c6e06f9224adfd52b298c5686d69d183698d2795041201e",
    "folder bitnet-autobitlinear config.json": "8773a9d3a86f3a5d4d0df8d4cb44de7e425ca61d40c1161d97873079de6be213",
    "folder bitnet-autobitlinear model-00001-of-00003.safetensors": "bce00b2b07c7819055c70c0d5c52fd464e99ded9a835729afb00bd87a2ffc521",
    "folder bitnet-autobitlinear model-00002-of-00003.safetensors": "f130fe9a3b2b9a26bb9e0c7ebd473202f78ce9f219adc1261d16afea2bc310bf",
    "folder bitnet-autobitlinear model-00003-of-00003.safetensors": "704b8db7f35bd22f2a8ebfa890feb398ad294776373cdc191fc6c4c17a5f207a",
    "folder bitnet-autobitlinear model.safetensors.index.json": "01daec62513d3cfae1a057ae414fe8458fa4766f093deb3cc4e97a11283a6fdf",
    "folder bitnet-autobitlinear tokenizer.json": "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    "dequantize folder bitnet-autobitlinear config.json": "59f156eceef8fb23441f968de55729331d1f730f8524e649e14088ae5d3e612c",
    "dequantize folder bitnet-autobitlinear model-00001-of-00003.safetensors": "c19e04f2781dad73b9c040b1575dc115453c024c2b5f64aaa39616bca11d6351",
    "dequantize folder bitnet-autobitlinear model-00002-of-00003.safetensors": "7d0820d86f1815b424a0a4a6fcbacc7f124b363c91e045e505a8d34a9afa3554",
    "dequantize folder bitnet-autobitlinear model-00003-of-00003.safetensors": "2e3cee9e05954551b3f70008d50fd6e164068d94870f8d00cb96416a9990f8ec",
    "dequantize folder bitnet-autobitlinear model.safetensors.index.json": "deac3ff7855003ba4aced2afb4afd0de8de338225a1b1a270094b6725bdf1987",
    "dequantize folder bitnet-autobitlinear tokenizer.json": "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    "folder tq2_0 config.json": "eb5b76075073fe333d1d844c91020fb1fde6fa805b5df7e6dfe04ccf2e16a1bd",
    "folder tq2_0 model-00001-of-00003.safetensors": "f01c462666e3dcaf819c93d11c84bc3dd1abf73f93b1ea45511ba5606845d0c5",
    "folder tq2_0 model-00002-of-00003.safetensors": "ed81009a8543de0d017355e4b11dc8dcf75a850eb1607ebe35620f0271f28601",
    "folder tq2_0 model-00003-of-00003.safetensors": "3260bd9e80c190df53fefc47a586e616d485dc51c269545c72211c8441c5a08d",
    "folder tq2_0 model.safetensors.index.json": "0f9befa9164cff49f8576be583ffd30e8b39fc14445fa58edfa14f9fa3d4aeb2",
    "folder tq2_0 tokenizer.json": "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    "dequantize folder tq2_0 config.json": "59f156eceef8fb23441f968de55729331d1f730f8524e649e14088ae5d3e612c",
    "dequantize folder tq2_0 model-00001-of-00003.safetensors": "c07f7934b2500d004ffe3b51c412d551746de16d4ed74275f87462f1c26fb6bf",
    "dequantize folder tq2_0 model-00002-of-00003.safetensors": "6cea07c8d01e6f5e41811c701fee8db110abfd7c4b4aa586469b53b71409a59d",
    "dequantize folder tq2_0 model-00003-of-00003.safetensors": "4cfe1f186ea94a8d5a922b9346dd656408b5c15685a0e0223b611f3bd71cf55b",
    "dequantize folder tq2_0 model.safetensors.index.json": "deac3ff7855003ba4aced2afb4afd0de8de338225a1b1a270094b6725bdf1987",
    "dequantize folder tq2_0 tokenizer.json": "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
}


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("digests")
    return write(root / "in.safetensors", tiny_model("BF16", hidden=256))


def folder(root, shards: int = 3):
    root.mkdir()
    state = tiny_model("BF16", hidden=256, seed=4)
    (root / "config.json").write_text(json.dumps({"model_type": "bitnet", "hidden_size": 256}))
    (root / "tokenizer.json").write_text("{}")
    names = sorted(state)
    weight_map = {}
    for i in range(shards):
        shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: state[n] for n in names[i::shards]}
        write(root / shard, part)
        weight_map.update(dict.fromkeys(part, shard))
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    return root


def digests(tmp_path, source) -> dict[str, str]:
    found = {}
    for name, options in RUNS.items():
        out = tmp_path / f"{name}.safetensors"
        ryzq.quantize_file(source, out, threads=2, **options)
        found[f"file {name}"] = sha256(out)
        back = tmp_path / f"{name}.back.safetensors"
        ryzq.dequantize_file(out, back)
        found[f"dequantize {name}"] = sha256(back)
    src = folder(tmp_path / "model")
    for name in ("bitnet-autobitlinear", "tq2_0"):
        dst = tmp_path / f"model-{name}"
        ryzq.quantize_model(src, dst, threads=2, **RUNS[name])
        # The model card names the source's path, which is this run's own; its contents are
        # tested in tests/files/test_model_card.py.
        for f in sorted(p for p in dst.iterdir() if p.name != "README.md"):
            found[f"folder {name} {f.name}"] = sha256(f)
        back = tmp_path / f"model-{name}-back"
        ryzq.dequantize_model(dst, back, dtype="float32")
        for f in sorted(p for p in back.iterdir() if p.name != "README.md"):
            found[f"dequantize folder {name} {f.name}"] = sha256(f)
    return found


def test_outputs_are_byte_identical_to_the_recorded_ones(tmp_path, source):
    found = digests(tmp_path, source)
    assert found == EXPECTED, json.dumps(found, indent=4)
