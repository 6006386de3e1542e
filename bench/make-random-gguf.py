#!/usr/bin/env python3
"""Writes a deterministic random-weight GGUF model at a real model's shape, with a
real tokenizer, using llama.cpp's own gguf-py. For speed benchmarks only: the
weights are noise, the shapes and the vocabulary are real.

    PYTHONPATH=$LLAMACPP/gguf-py python3 bench/make-random-gguf.py \
        --shape smollm2-135m --vocab-gguf ggml-vocab-starcoder.gguf --type f32 --out X.gguf

Weights as the parity fixtures (../shared/models/fixtures/README.md) draw them:
numpy.random.default_rng(seed), float32 standard normals drawn tensor by tensor
in file order; matrices N(0, 1/fan_in), token_embd (and output when untied)
N(0, (2/sqrt(dim))^2), norm weights 1 + 0.1 N(0,1), qkv biases 0.1 N(0,1).
--type f16 stores 2-D tensors as f16 and 1-D ones as f32, like
convert_hf_to_gguf.py. Every tokenizer.* key is copied from --vocab-gguf, whose
token count is n_vocab. Tensors are generated and written one at a time, so
memory stays near the largest tensor.
"""
import argparse
import sys

import numpy as np

try:
    import gguf
except ImportError:
    sys.exit("make-random-gguf.py: cannot import gguf: set PYTHONPATH=$LLAMACPP/gguf-py")

# name: arch, dim, layers, heads, kv heads, head_dim, ffn, ctx, rope theta, rms eps, tied, qkv bias
SHAPES = {
    "smollm2-135m": dict(arch="llama", dim=576, layers=30, heads=9, kv_heads=3, head_dim=64,
                         ffn=1536, ctx=2048, rope_theta=100000.0, eps=1e-5, tied=True, qkv_bias=False),
    "qwen2.5-0.5b": dict(arch="qwen2", dim=896, layers=24, heads=14, kv_heads=2, head_dim=64,
                         ffn=4864, ctx=4096, rope_theta=1000000.0, eps=1e-6, tied=True, qkv_bias=True),
    # no real model: every width a multiple of 256, so --pure K-quants take every matrix
    "pure1024": dict(arch="llama", dim=1024, layers=24, heads=16, kv_heads=4, head_dim=64,
                     ffn=2816, ctx=2048, rope_theta=10000.0, eps=1e-5, tied=True, qkv_bias=False),
}


def field_value(field):
    """A reader field's value in the form GGUFWriter.add_key_value packs."""
    T = gguf.GGUFValueType
    vtype = T(field.types[0])
    if vtype == T.ARRAY:
        sub = T(field.types[-1])
        if sub == T.STRING:
            return [bytes(field.parts[i]) for i in field.data], vtype, sub
        return [field.parts[i].tolist()[0] for i in field.data], vtype, sub
    if vtype == T.STRING:
        return bytes(field.parts[field.data[0]]), vtype, None
    return field.parts[field.data[0]].tolist()[0], vtype, None


def tensor_plan(s, n_vocab):
    """(name, numpy shape (rows, cols), std or ('norm'|'bias')) in file order."""
    d, hd = s["dim"], s["head_dim"]
    q, kv = s["heads"] * hd, s["kv_heads"] * hd
    emb_std = 2.0 / np.sqrt(d)
    plan = [("token_embd.weight", (n_vocab, d), emb_std)]
    for i in range(s["layers"]):
        b = "blk.%d." % i
        plan += [(b + "attn_norm.weight", (d,), "norm"),
                 (b + "attn_q.weight", (q, d), 1 / np.sqrt(d)),
                 (b + "attn_k.weight", (kv, d), 1 / np.sqrt(d)),
                 (b + "attn_v.weight", (kv, d), 1 / np.sqrt(d))]
        if s["qkv_bias"]:
            plan += [(b + "attn_q.bias", (q,), "bias"), (b + "attn_k.bias", (kv,), "bias"),
                     (b + "attn_v.bias", (kv,), "bias")]
        plan += [(b + "attn_output.weight", (d, q), 1 / np.sqrt(q)),
                 (b + "ffn_norm.weight", (d,), "norm"),
                 (b + "ffn_gate.weight", (s["ffn"], d), 1 / np.sqrt(d)),
                 (b + "ffn_up.weight", (s["ffn"], d), 1 / np.sqrt(d)),
                 (b + "ffn_down.weight", (d, s["ffn"]), 1 / np.sqrt(s["ffn"]))]
    plan.append(("output_norm.weight", (d,), "norm"))
    if not s["tied"]:
        plan.append(("output.weight", (n_vocab, d), emb_std))
    return plan


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", required=True, choices=sorted(SHAPES))
    ap.add_argument("--vocab-gguf", required=True, help="llama.cpp vocab file giving tokenizer.*")
    ap.add_argument("--type", default="f32", choices=["f32", "f16"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--name", default=None)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    s = SHAPES[a.shape]

    reader = gguf.GGUFReader(a.vocab_gguf)
    tok_fields = [(k, f) for k, f in reader.fields.items() if k.startswith("tokenizer.")]
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data)

    arch = s["arch"]
    w = gguf.GGUFWriter(a.out, arch)
    w.add_name(a.name or "slm-bench-%s-random" % a.shape)
    w.add_description("random weights (seed %d) at the %s shape, for speed benchmarks" % (a.seed, a.shape))
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if a.type == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    w.add_uint32(arch + ".context_length", s["ctx"])
    w.add_uint32(arch + ".embedding_length", s["dim"])
    w.add_uint32(arch + ".block_count", s["layers"])
    w.add_uint32(arch + ".feed_forward_length", s["ffn"])
    w.add_uint32(arch + ".attention.head_count", s["heads"])
    w.add_uint32(arch + ".attention.head_count_kv", s["kv_heads"])
    w.add_uint32(arch + ".attention.key_length", s["head_dim"])
    w.add_uint32(arch + ".attention.value_length", s["head_dim"])
    w.add_uint32(arch + ".rope.dimension_count", s["head_dim"])
    w.add_float32(arch + ".rope.freq_base", s["rope_theta"])
    w.add_float32(arch + ".attention.layer_norm_rms_epsilon", s["eps"])
    w.add_uint32(arch + ".vocab_size", n_vocab)
    for key, field in tok_fields:
        val, vtype, sub = field_value(field)
        w.add_key_value(key, val, vtype, sub_type=sub)

    plan = tensor_plan(s, n_vocab)
    f16 = a.type == "f16"
    for name, shape, _ in plan:
        dt = np.float16 if (f16 and len(shape) == 2) else np.float32
        n = int(np.prod(shape))
        w.add_tensor_info(name, shape, np.dtype(dt), n * np.dtype(dt).itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()

    rng = np.random.default_rng(a.seed)
    n_params = 0
    for name, shape, std in plan:
        x = rng.standard_normal(shape, dtype=np.float32)
        if std == "norm":
            x = 1.0 + np.float32(0.1) * x
        elif std == "bias":
            x = np.float32(0.1) * x
        else:
            x *= np.float32(std)
        if f16 and len(shape) == 2:
            x = x.astype(np.float16)
        w.write_tensor_data(x)
        n_params += x.size
        del x
    w.close()
    print("%s: %s %s, %d tensors, %.1fM parameters, vocab %d" %
          (a.out, a.shape, a.type, len(plan), n_params / 1e6, n_vocab), file=sys.stderr)


if __name__ == "__main__":
    main()
