#!/usr/bin/env python3
"""Writes the seed corpora of circuitry's fuzzers (tests/fuzz/corpus/<fuzzer>/): small, valid
files of every shape the readers accept, and a few broken ones near the checks. Deterministic;
the files are committed, so run it again only to change them:

    python3 tests/fuzz/make_seeds.py

Plain Python 3 (struct, json): the safetensors files are written the way the format defines them
(8-byte little-endian header length, JSON header padded with spaces to 8 bytes, row-major data).
"""
import json
import math
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def write(fuzzer, name, data):
    directory = os.path.join(CORPUS, fuzzer)
    os.makedirs(directory, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


# ---- safetensors ------------------------------------------------------------------------------

def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def encode(dtype, values):
    if dtype == "F64":
        return b"".join(struct.pack("<d", v) for v in values)
    if dtype == "F32":
        return b"".join(struct.pack("<f", v) for v in values)
    if dtype == "F16":
        return b"".join(struct.pack("<e", v) for v in values)
    if dtype == "BF16":  # the top half of a binary32 (values chosen exact)
        return b"".join(struct.pack("<f", v)[2:] for v in values)
    if dtype == "I64":
        return b"".join(struct.pack("<q", int(v)) for v in values)
    if dtype == "U8" or dtype == "BOOL":
        return bytes(int(v) & 0xFF for v in values)
    raise ValueError(dtype)


def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, values)."""
    header, data = {}, b""
    for name, dtype, shape, values in tensors:
        raw = encode(dtype, values)
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":"), sort_keys=True)
    text += " " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text.encode() + data


def values(n, seed):
    # k/8 - 2: exact in every floating dtype.
    return [((seed + 5 * i) % 33) / 8.0 - 2.0 for i in range(n)]


def tiny_model(layers=1, heads=2, d_model=4, d_head=2, d_vocab=6, n_ctx=3, ln=True, dtype="F32",
               config=True, biases=True):
    t = []

    def add(name, shape, seed):
        t.append((name, dtype, shape, values(numel(shape), seed)))

    add("embed.W_E", [d_vocab, d_model], 1)
    add("pos_embed.W_pos", [n_ctx, d_model], 2)
    for l in range(layers):
        p = "blocks.%d." % l
        if ln:
            t.append((p + "ln1.w", dtype, [d_model], [1.0] * d_model))
            add(p + "ln1.b", [d_model], 3 + l)
        add(p + "attn.W_Q", [heads, d_model, d_head], 4 + l)
        add(p + "attn.W_K", [heads, d_model, d_head], 5 + l)
        add(p + "attn.W_V", [heads, d_model, d_head], 6 + l)
        add(p + "attn.W_O", [heads, d_head, d_model], 7 + l)
        if biases:
            add(p + "attn.b_Q", [heads, d_head], 8 + l)
            add(p + "attn.b_O", [d_model], 9 + l)
    if ln:
        t.append(("ln_final.w", dtype, [d_model], [1.0] * d_model))
        add("ln_final.b", [d_model], 10)
    add("unembed.W_U", [d_model, d_vocab], 11)
    if biases:
        add("unembed.b_U", [d_vocab], 12)
    meta = {"format": "pt"}
    if config:
        meta["config"] = json.dumps({
            "n_layers": layers, "n_heads": heads, "d_model": d_model, "d_head": d_head,
            "d_vocab": d_vocab, "n_ctx": n_ctx, "normalization_type": "LN" if ln else None,
            "positional_embedding_type": "standard"})
    return safetensors(t, meta)


def safetensors_seeds():
    write("safetensors", "model-1l-f32", tiny_model())
    write("safetensors", "model-2l-f16-no-config", tiny_model(layers=2, dtype="F16", config=False))
    write("safetensors", "model-1l-bf16-no-ln", tiny_model(ln=False, dtype="BF16", biases=False))
    write("safetensors", "model-1l-f64-one-head", tiny_model(heads=1, d_head=3, dtype="F64"))
    zero = safetensors([(n, "F32", s, [0.0] * numel(s)) for n, s in [
        ("embed.W_E", [3, 2]), ("pos_embed.W_pos", [2, 2]), ("blocks.0.attn.W_Q", [1, 2, 1]),
        ("blocks.0.attn.W_K", [1, 2, 1]), ("blocks.0.attn.W_V", [1, 2, 1]),
        ("blocks.0.attn.W_O", [1, 1, 2]), ("unembed.W_U", [2, 3])]])
    write("safetensors", "model-all-zero", zero)
    write("safetensors", "dtypes", safetensors([
        ("f64", "F64", [2], [1.5, -0.25]), ("f32", "F32", [1, 2], [3.0, 1e-3]),
        ("f16", "F16", [2, 1], [65504.0, -6e-8]), ("bf16", "BF16", [2], [1.0, -2.0]),
        ("i64", "I64", [3], [-1, 0, 2**62]), ("u8", "U8", [2], [0, 255]),
        ("bool", "BOOL", [2], [0, 1]), ("scalar", "F32", [], [7.0]),
        ("empty", "F32", [0, 4], [])], {"k": "v"}))
    write("safetensors", "non-finite", safetensors([
        ("x", "F32", [3], [1.0, math.inf, math.nan])]))
    write("safetensors", "empty-header", safetensors([]))
    # Broken, each near one check: overlapping ranges, bad size, length past the end.
    write("safetensors", "overlap",
          struct.pack("<Q", 96) +
          b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
          b'"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}' + b" " * 4 + bytes(12))
    write("safetensors", "header-past-end", struct.pack("<Q", 1000) + b"{}")


# ---- config -----------------------------------------------------------------------------------

def config_seeds():
    write("config", "reference-2l.json", json.dumps({
        "n_layers": 2, "n_heads": 8, "d_model": 256, "d_head": 32, "d_vocab": 4096, "n_ctx": 256,
        "normalization_type": "LN", "positional_embedding_type": "standard"}))
    write("config", "shortformer-override.json", '{"positional_embedding_type": "shortformer"}')
    write("config", "lnpre-null.json",
          '{"n_layers":1,"n_heads":1,"d_model":1,"d_head":1,"d_vocab":1,"n_ctx":1,'
          '"normalization_type":"LNPre","eps":1e-5}\n')
    write("config", "transformerlens-dump.json", json.dumps({
        "n_layers": 1, "d_model": 512, "n_ctx": 1024, "d_head": 64, "model_name": "attn-only-1l",
        "n_heads": 8, "d_mlp": None, "act_fn": None, "d_vocab": 48262, "eps": 1e-05,
        "use_attn_result": False, "normalization_type": None, "layer_norm_eps": 1e-5,
        "attn_only": True, "positional_embedding_type": "standard", "rotary_dim": None,
        "n_params": 1048576, "tokenizer_name": "NeelNanda/gpt-neox-tokenizer-digits"}, indent=2))
    write("config", "bad-types.json", '{"n_layers": "2", "d_model": 2.5, "eps": -1}')
    write("config", "huge.json", '{"d_vocab": 18446744073709551615, "eps": 1e308}')


# ---- tokenizer.json ---------------------------------------------------------------------------

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + \
        list(range(0xAE, 0xFF + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def tokenizer(extra, merges, added=(), prefix=False, model_extra=None, pre_extra=None):
    byte = bytes_to_unicode()
    vocab = {byte[b]: b for b in range(256)}
    for token in extra:
        vocab[token] = len(vocab)
    model = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
             "vocab": vocab, "merges": merges}
    model.update(model_extra or {})
    pre = {"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": True,
           "use_regex": True}
    pre.update(pre_extra or {})
    return json.dumps({"version": "1.0", "truncation": None, "padding": None,
                       "added_tokens": list(added), "normalizer": None, "pre_tokenizer": pre,
                       "post_processor": None, "decoder": {"type": "ByteLevel"}, "model": model},
                      ensure_ascii=False)


def tokenizer_seeds():
    g = bytes_to_unicode()[ord(" ")]  # 'Ġ'
    write("tokenizer", "bytes-and-merges.json",
          tokenizer(["de", "def", g + "r", "re", g + "re", "\u010a\u010a"],
                    ["d e", "de f", g + " r", "r e", g + " re", "\u010a \u010a"]))
    write("tokenizer", "pair-merges-added.json",
          tokenizer(["ab", "abc"], [["a", "b"], ["ab", "c"]], added=[
              {"id": 258, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
               "rstrip": False, "normalized": False, "special": True},
              {"id": 259, "content": "[X]", "single_word": True, "lstrip": True,
               "rstrip": True, "normalized": True, "special": False}], prefix=True))
    write("tokenizer", "unk-fallback.json", json.dumps({
        "pre_tokenizer": {"type": "ByteLevel", "use_regex": False},
        "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "<unk>": 3, "<0x63>": 4},
                  "merges": ["#version: 0.2", "a b"], "unk_token": "<unk>", "fuse_unk": True,
                  "byte_fallback": True, "ignore_merges": True}}))
    write("tokenizer", "holes.json",
          '{"pre_tokenizer":{"type":"ByteLevel"},"model":{"vocab":{"a":0,"b":2},"merges":[]}}')
    write("tokenizer", "normalizer-sequence.json", json.dumps({
        "normalizer": {"type": "Sequence", "normalizers": []},
        "pre_tokenizer": {"type": "ByteLevel"}, "decoder": None,
        "model": {"vocab": {"x": 0}, "merges": []}}))


if __name__ == "__main__":
    safetensors_seeds()
    config_seeds()
    tokenizer_seeds()
