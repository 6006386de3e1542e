#!/usr/bin/env python3
"""Writes the tiny models of the fuzz seed corpora that tests/gen_hf_fixture.py
does not: a llama2.c checkpoint with its tokenizer.bin, and a GGUF with a
SentencePiece ("llama") tokenizer. Called by tests/fuzz/make-corpus.sh.

    gen_seeds.py --out DIR

DIR/tiny.bin + DIR/tiny_tok.bin      llama2.c legacy checkpoint (shared classifier)
DIR/tiny_sep.bin                     the same with a separate classifier (negative vocab_size)
DIR/tiny_spm.gguf                    the same weights and vocabulary as GGUF v3
Vocabulary: <unk>, BOS, EOS, the 256 byte tokens <0xXX>, then a few pieces.
Weights: numpy.random.default_rng(1), scaled normals. Deterministic: same bytes
every run. Needs numpy (python3-numpy).
"""
import argparse, os, struct, sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from gen_hf_fixture import gguf_kv, gguf_str  # noqa: E402

DIM, HIDDEN, LAYERS, HEADS, KV_HEADS, SEQ = 32, 64, 1, 2, 1, 32
PIECES = [' ', 'e', 't', 'a', 'o', 'n', 'h', ' t', 'th', ' th', ' the', ' a', 'On', 'ce', 'Once', ' u', 'up', 'on',
          ' upon', ' ti', 'me', ' time', 'ha', 'pp', 'y', '.', ',', '\n', ' was', ' girl', ' named', ' Lily']


def vocabulary():
    texts = [b'<unk>', b'\n<s>\n', b'\n</s>\n'] + [('<0x%02X>' % b).encode() for b in range(256)]
    texts += [p.encode() for p in PIECES]
    scores = [0.0] * 259 + [-float(i) for i in range(len(PIECES))]
    return texts, scores


def weights(vocab):
    rng = np.random.default_rng(1)
    hs = DIM // HEADS
    kv = hs * KV_HEADS

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols), dtype=np.float32) / np.sqrt(cols)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n, dtype=np.float32)).astype(np.float32)

    w = {'emb': mat(vocab, DIM), 'rms_att': np.stack([norm(DIM) for _ in range(LAYERS)]),
         'wq': np.stack([mat(DIM, DIM) for _ in range(LAYERS)]), 'wk': np.stack([mat(kv, DIM) for _ in range(LAYERS)]),
         'wv': np.stack([mat(kv, DIM) for _ in range(LAYERS)]), 'wo': np.stack([mat(DIM, DIM) for _ in range(LAYERS)]),
         'rms_ffn': np.stack([norm(DIM) for _ in range(LAYERS)]),
         'w1': np.stack([mat(HIDDEN, DIM) for _ in range(LAYERS)]),
         'w2': np.stack([mat(DIM, HIDDEN) for _ in range(LAYERS)]),
         'w3': np.stack([mat(HIDDEN, DIM) for _ in range(LAYERS)]), 'rms_final': norm(DIM),
         'freq': np.zeros((2, SEQ, hs // 2), dtype=np.float32), 'wcls': mat(vocab, DIM)}
    return w


def write_llama2c(path, w, vocab, separate):
    order = ['emb', 'rms_att', 'wq', 'wk', 'wv', 'wo', 'rms_ffn', 'w1', 'w2', 'w3', 'rms_final', 'freq']
    with open(path, 'wb') as f:
        f.write(struct.pack('<7i', DIM, HIDDEN, LAYERS, HEADS, KV_HEADS, -vocab if separate else vocab, SEQ))
        for k in order + (['wcls'] if separate else []):
            f.write(w[k].astype('<f4').tobytes())


def write_tokenizer_bin(path, texts, scores):
    with open(path, 'wb') as f:
        f.write(struct.pack('<i', max(len(t) for t in texts)))
        for t, s in zip(texts, scores):
            f.write(struct.pack('<fi', s, len(t)) + t)


def write_gguf_spm(path, w, texts, scores):
    types = [2, 3, 3] + [6] * 256 + [1] * len(PIECES)
    # GGUF SentencePiece vocabularies spell spaces as U+2581 and BOS/EOS as <s>, </s>
    toks = [b'<unk>', b'<s>', b'</s>'] + texts[3:259] + [p.replace(' ', '\u2581').encode() for p in PIECES]
    kv = [gguf_kv('general.architecture', 8, 'llama'), gguf_kv('general.name', 8, 'slm-fuzz-spm'),
          gguf_kv('llama.context_length', 4, SEQ), gguf_kv('llama.embedding_length', 4, DIM),
          gguf_kv('llama.block_count', 4, LAYERS), gguf_kv('llama.feed_forward_length', 4, HIDDEN),
          gguf_kv('llama.attention.head_count', 4, HEADS), gguf_kv('llama.attention.head_count_kv', 4, KV_HEADS),
          gguf_kv('llama.rope.freq_base', 6, 10000.0), gguf_kv('llama.attention.layer_norm_rms_epsilon', 6, 1e-5),
          gguf_kv('tokenizer.ggml.model', 8, 'llama'), gguf_kv('tokenizer.ggml.tokens', 9, (8, toks)),
          gguf_kv('tokenizer.ggml.scores', 9, (6, scores)), gguf_kv('tokenizer.ggml.token_type', 9, (5, types)),
          gguf_kv('tokenizer.ggml.bos_token_id', 4, 1), gguf_kv('tokenizer.ggml.eos_token_id', 4, 2),
          gguf_kv('tokenizer.ggml.unknown_token_id', 4, 0), gguf_kv('tokenizer.ggml.add_bos_token', 7, True),
          gguf_kv('tokenizer.chat_template', 8, "{% for message in messages %}{{ '[INST] ' + message['content'] + "
                  "' [/INST]' }}{% endfor %}")]
    tensors = [('token_embd.weight', w['emb'])]
    for l in range(LAYERS):
        b = 'blk.%d.' % l
        tensors += [(b + 'attn_norm.weight', w['rms_att'][l]), (b + 'attn_q.weight', w['wq'][l]),
                    (b + 'attn_k.weight', w['wk'][l]), (b + 'attn_v.weight', w['wv'][l]),
                    (b + 'attn_output.weight', w['wo'][l]), (b + 'ffn_norm.weight', w['rms_ffn'][l]),
                    (b + 'ffn_gate.weight', w['w1'][l]), (b + 'ffn_up.weight', w['w3'][l]),
                    (b + 'ffn_down.weight', w['w2'][l])]
    tensors += [('output_norm.weight', w['rms_final'])]
    infos, blobs, off = [], [], 0
    for name, a in tensors:
        # matrices as f16 (GGUF type 1), vectors as f32, as llama.cpp's converter stores them
        raw, t = (a.astype('<f2').tobytes(), 1) if a.ndim == 2 else (a.astype('<f4').tobytes(), 0)
        shape = list(reversed(a.shape))
        infos.append(gguf_str(name) + struct.pack('<I', len(shape)) + struct.pack('<%dQ' % len(shape), *shape) +
                     struct.pack('<IQ', t, off))
        blobs.append(raw)
        off += len(raw) + (-len(raw) % 32)
    head = b'GGUF' + struct.pack('<IQQ', 3, len(infos), len(kv)) + b''.join(kv) + b''.join(infos)
    with open(path, 'wb') as f:
        f.write(head)
        f.write(b'\0' * (-len(head) % 32))
        for b in blobs:
            f.write(b)
            f.write(b'\0' * (-len(b) % 32))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    texts, scores = vocabulary()
    w = weights(len(texts))
    write_llama2c(os.path.join(a.out, 'tiny.bin'), w, len(texts), False)
    write_llama2c(os.path.join(a.out, 'tiny_sep.bin'), w, len(texts), True)
    write_tokenizer_bin(os.path.join(a.out, 'tiny_tok.bin'), texts, scores)
    write_gguf_spm(os.path.join(a.out, 'tiny_spm.gguf'), w, texts, scores)


if __name__ == '__main__':
    main()
