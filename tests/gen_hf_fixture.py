#!/usr/bin/env python3
"""Writes one small random-weight model twice: as a Hugging Face folder and as a GGUF file.

    gen_hf_fixture.py --out DIR [--arch llama|qwen2|qwen3] [--vocab smollm2|qwen2]
                      [--dtype f32|f16|bf16] [--tied] [--shards N] [--seed S] [--models PATH]
                      [--max-vocab N] [--lora] [--fim]

DIR/hf/     config.json, model.safetensors (or N shards + model.safetensors.index.json),
            tokenizer.json, tokenizer_config.json -- as transformers saves them
DIR/model.gguf  the same weights and tokenizer as llama.cpp's convert_hf_to_gguf.py writes
            them (llama: q/k rows permuted to GGUF's adjacent-pair RoPE layout)
DIR/lora_*/, DIR/lora.gguf, DIR/model_q8_0.gguf  with --lora: LoRA adapters of the model
            (PEFT folders and a llama.cpp GGUF adapter) and the model in Q8_0 (see write_loras)

Both must convert (tools/slm-convert) to .slm files that give the same logits: the HF
llama folder is stored unpermuted with rope_kind 1 (NeoX), the GGUF one permuted with
rope_kind 0, which is the same arithmetic up to float summation order.

The tokenizer is a real one from the shared test assets (--models, default $SLM_MODELS or
../shared/models next to the repository): SmolLM2's tokenizer.json (byte-level BPE with the
StarCoder/SmolLM digit split) or Qwen2's vocab.json + merges.txt (Qwen2 regex split).
With --fim (qwen2 vocabulary) the added tokens are Qwen2.5-Coder's: after <|im_end|>,
ids 151646-151664 from <|object_ref_start|> to <|file_sep|>, with the fill-in-the-middle
tokens <|fim_prefix|> 151659, <|fim_middle|> 151660, <|fim_suffix|> 151661, <|fim_pad|>
151662, <|repo_name|> 151663, <|file_sep|> 151664 -- "special": false, as Qwen2.5's
tokenizer.json and tokenizer_config.json list them (the vision tokens before them are
special), so that a converter must find them by their text, as llama.cpp does.
Only numpy is needed (python3-numpy). Deterministic: same arguments, same bytes.
"""
import argparse, json, os, struct, sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def bf16_bits(a):
    """float32 -> bfloat16 bit patterns (round to nearest even), as torch does."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def encode(a, dtype):
    """The bytes of a float32 array stored as dtype, and the float32 values they hold."""
    if dtype == 'f32':
        return a.astype('<f4').tobytes(), a
    if dtype == 'f16':
        h = a.astype('<f2')
        return h.tobytes(), h.astype(np.float32)
    b = bf16_bits(a).astype('<u2')
    return b.tobytes(), (b.astype(np.uint32) << 16).view(np.float32)


# ---- tokenizer -------------------------------------------------------------

def truncate_vocab(tj, n):
    """Keeps the tokens with ids below n and the merges among them: a small real vocabulary."""
    vocab = {t: i for t, i in tj['model']['vocab'].items() if i < n}
    merges = []
    for m in tj['model']['merges']:
        a, b = m.split(' ', 1) if isinstance(m, str) else m
        if a in vocab and b in vocab and a + b in vocab:
            merges.append(m)
    tj['model']['vocab'] = vocab
    tj['model']['merges'] = merges
    tj['added_tokens'] = [a for a in tj['added_tokens'] if a['id'] < n]


# Qwen2.5(-Coder)'s added tokens after Qwen2's <|endoftext|> <|im_start|> <|im_end|>
# (151643-151645): (content, special) from its tokenizer_config.json, in id order
QWEN25_ADDED = [('<|object_ref_start|>', True), ('<|object_ref_end|>', True), ('<|box_start|>', True),
                ('<|box_end|>', True), ('<|quad_start|>', True), ('<|quad_end|>', True), ('<|vision_start|>', True),
                ('<|vision_end|>', True), ('<|vision_pad|>', True), ('<|image_pad|>', True), ('<|video_pad|>', True),
                ('<tool_call>', False), ('</tool_call>', False), ('<|fim_prefix|>', False), ('<|fim_middle|>', False),
                ('<|fim_suffix|>', False), ('<|fim_pad|>', False), ('<|repo_name|>', False), ('<|file_sep|>', False)]


def load_tokenizer(models, vocab, max_vocab=0, fim=False):
    tok_dir = os.path.join(models, 'tokenizers')
    if vocab == 'smollm2':
        tj = json.load(open(os.path.join(tok_dir, 'smollm2-tokenizer.json'), encoding='utf-8'))
        cfg = {'add_prefix_space': False, 'bos_token': '<|im_start|>', 'eos_token': '<|im_end|>',
               'pad_token': '<|im_end|>', 'unk_token': '<|endoftext|>', 'chat_template': CHATML,
               'model_max_length': 8192, 'tokenizer_class': 'GPT2Tokenizer'}
        pre = 'smollm'
    else:
        v = json.load(open(os.path.join(tok_dir, 'qwen2-vocab.json'), encoding='utf-8'))
        merges = [l for l in open(os.path.join(tok_dir, 'qwen2-merges.txt'), encoding='utf-8').read().split('\n')
                  if l and not l.startswith('#version')]
        cfg = json.load(open(os.path.join(tok_dir, 'qwen2-tokenizer_config.json'), encoding='utf-8'))
        if fim:
            for k, (content, special) in enumerate(QWEN25_ADDED):
                cfg['added_tokens_decoder'][str(151646 + k)] = {
                    'content': content, 'lstrip': False, 'normalized': False, 'rstrip': False, 'single_word': False,
                    'special': special}
        added = [{'id': int(i), 'content': t['content'], 'single_word': False, 'lstrip': False, 'rstrip': False,
                  'normalized': False, 'special': t['special']} for i, t in sorted(cfg['added_tokens_decoder'].items(),
                                                                                    key=lambda x: int(x[0]))]
        tj = {'version': '1.0', 'truncation': None, 'padding': None, 'added_tokens': added,
              'normalizer': {'type': 'NFC'},
              'pre_tokenizer': {'type': 'Sequence', 'pretokenizers': [
                  {'type': 'Split', 'pattern': {'Regex': QWEN2_REGEX}, 'behavior': 'Isolated', 'invert': False},
                  {'type': 'ByteLevel', 'add_prefix_space': False, 'trim_offsets': False, 'use_regex': False}]},
              'post_processor': {'type': 'ByteLevel', 'add_prefix_space': False, 'trim_offsets': False, 'use_regex': False},
              'decoder': {'type': 'ByteLevel', 'add_prefix_space': False, 'trim_offsets': False, 'use_regex': False},
              'model': {'type': 'BPE', 'dropout': None, 'unk_token': None, 'continuing_subword_prefix': '',
                        'end_of_word_suffix': '', 'fuse_unk': False, 'byte_fallback': False,
                        'vocab': v, 'merges': [m.split(' ') for m in merges]}}   # the newer [a, b] merge form
        pre = 'qwen2'
    if max_vocab:
        truncate_vocab(tj, max_vocab)
    vocab_map = dict(tj['model']['vocab'])
    special = {}
    for a in tj['added_tokens']:
        vocab_map[a['content']] = a['id']
        special[a['id']] = a['special']
    n = max(vocab_map.values()) + 1
    tokens = [None] * n
    for t, i in vocab_map.items():
        tokens[i] = t
    types = []
    for i, t in enumerate(tokens):
        if t is None:
            tokens[i] = '[PAD%d]' % i
            types.append(5)
        elif i in special:
            # convert_hf_to_gguf.py: CONTROL when special or when it looks special (does_token_look_special:
            # <|...|>, <pad>, <mask>; Qwen2.5's <|fim_prefix|>... are not "special"), else USER_DEFINED
            looks = (t.startswith('<|') and t.endswith('|>')) or t in ('<pad>', '<mask>')
            types.append(3 if special[i] or looks else 4)
        else:
            types.append(1)
    merges = [m if isinstance(m, str) else ' '.join(m) for m in tj['model']['merges']]
    ids = {k: vocab_map.get(cfg.get(k)) if isinstance(cfg.get(k), str) else None
           for k in ('bos_token', 'eos_token', 'pad_token', 'unk_token')}
    return tj, cfg, pre, tokens, types, merges, ids


# ---- weights ---------------------------------------------------------------

def make_weights(rng, arch, dim, layers, heads, kv_heads, head_dim, ffn, n_vocab, tied):
    """HF names -> float32 arrays in PyTorch layout ([out, in] for Linear)."""
    def mat(out, inp):
        return (rng.standard_normal((out, inp), dtype=np.float32) / np.sqrt(inp)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n, dtype=np.float32)).astype(np.float32)

    w = {'model.embed_tokens.weight': (rng.standard_normal((n_vocab, dim), dtype=np.float32) * (2.0 / np.sqrt(dim))).astype(np.float32)}
    for l in range(layers):
        p = 'model.layers.%d.' % l
        w[p + 'input_layernorm.weight'] = norm(dim)
        w[p + 'self_attn.q_proj.weight'] = mat(heads * head_dim, dim)
        w[p + 'self_attn.k_proj.weight'] = mat(kv_heads * head_dim, dim)
        w[p + 'self_attn.v_proj.weight'] = mat(kv_heads * head_dim, dim)
        if arch == 'qwen2':
            w[p + 'self_attn.q_proj.bias'] = (0.1 * rng.standard_normal(heads * head_dim, dtype=np.float32)).astype(np.float32)
            w[p + 'self_attn.k_proj.bias'] = (0.1 * rng.standard_normal(kv_heads * head_dim, dtype=np.float32)).astype(np.float32)
            w[p + 'self_attn.v_proj.bias'] = (0.1 * rng.standard_normal(kv_heads * head_dim, dtype=np.float32)).astype(np.float32)
        if arch == 'qwen3':
            w[p + 'self_attn.q_norm.weight'] = norm(head_dim)
            w[p + 'self_attn.k_norm.weight'] = norm(head_dim)
        w[p + 'self_attn.o_proj.weight'] = mat(dim, heads * head_dim)
        w[p + 'post_attention_layernorm.weight'] = norm(dim)
        w[p + 'mlp.gate_proj.weight'] = mat(ffn, dim)
        w[p + 'mlp.up_proj.weight'] = mat(ffn, dim)
        w[p + 'mlp.down_proj.weight'] = mat(dim, ffn)
    w['model.norm.weight'] = norm(dim)
    if not tied:
        w['lm_head.weight'] = (rng.standard_normal((n_vocab, dim), dtype=np.float32) * (2.0 / np.sqrt(dim))).astype(np.float32)
    return w


def write_safetensors(path, tensors, dtype):
    """tensors: list of (name, float32 array), all saved in the model dtype as transformers does."""
    st_dtype = {'f32': 'F32', 'f16': 'F16', 'bf16': 'BF16'}[dtype]
    header, blobs, off = {}, [], 0
    for name, a in tensors:
        raw, _ = encode(a, dtype)
        header[name] = {'dtype': st_dtype, 'shape': list(a.shape), 'data_offsets': [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header['__metadata__'] = {'format': 'pt'}
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * (-len(h) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    return off


# ---- GGUF --------------------------------------------------------------------

def gguf_str(s):
    b = s.encode('utf-8') if isinstance(s, str) else s
    return struct.pack('<Q', len(b)) + b


def gguf_kv(key, vtype, value):
    out = gguf_str(key) + struct.pack('<I', vtype)
    if vtype == 4: out += struct.pack('<I', value)         # uint32
    elif vtype == 6: out += struct.pack('<f', value)       # float32
    elif vtype == 7: out += struct.pack('<B', 1 if value else 0)
    elif vtype == 8: out += gguf_str(value)
    else:                                                  # ('array', element type, values)
        et, vals = value
        out += struct.pack('<IQ', et, len(vals))
        if et == 8: out += b''.join(gguf_str(v) for v in vals)
        elif et == 6: out += np.asarray(vals, dtype='<f4').tobytes()
        elif et == 5: out += np.asarray(vals, dtype='<i4').tobytes()
    return out


def permute_rope(w, n_head):
    """llama.cpp's convert_hf_to_gguf permute: HF rotate-halves rows -> adjacent pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


GGUF_NAMES = {'input_layernorm.weight': 'attn_norm.weight', 'self_attn.q_proj.weight': 'attn_q.weight',
              'self_attn.k_proj.weight': 'attn_k.weight', 'self_attn.v_proj.weight': 'attn_v.weight',
              'self_attn.o_proj.weight': 'attn_output.weight', 'self_attn.q_proj.bias': 'attn_q.bias',
              'self_attn.k_proj.bias': 'attn_k.bias', 'self_attn.v_proj.bias': 'attn_v.bias',
              'self_attn.q_norm.weight': 'attn_q_norm.weight', 'self_attn.k_norm.weight': 'attn_k_norm.weight',
              'post_attention_layernorm.weight': 'ffn_norm.weight', 'mlp.gate_proj.weight': 'ffn_gate.weight',
              'mlp.up_proj.weight': 'ffn_up.weight', 'mlp.down_proj.weight': 'ffn_down.weight'}


def gguf_name(hf):
    if hf == 'model.embed_tokens.weight': return 'token_embd.weight'
    if hf == 'model.norm.weight': return 'output_norm.weight'
    if hf == 'lm_head.weight': return 'output.weight'
    parts = hf.split('.', 3)               # model layers N rest
    return 'blk.%s.%s' % (parts[2], GGUF_NAMES[parts[3]])


def q8_0_bytes(w):
    """GGML Q8_0 blocks of a float32 matrix: per 32 values an f16 scale d = max|x| / 127 and int8 round(x / d)."""
    x = w.astype(np.float32).reshape(-1, 32)
    d = np.abs(x).max(axis=1) / 127.0
    inv = np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), 0.0).astype(np.float32)
    q = np.clip(np.trunc(x * inv[:, None] + np.copysign(0.5, x)), -127, 127).astype(np.int8)   # roundf, as ggml
    blocks = np.empty(x.shape[0], dtype=[('d', '<f2'), ('q', 'i1', 32)])
    blocks['d'] = d.astype(np.float16)
    blocks['q'] = q
    return blocks.tobytes()


def write_gguf_tensors(path, kv, tensors):
    """tensors: (name, raw bytes, GGML type, numpy shape)."""
    infos, blobs, off = [], [], 0
    for name, raw, t, npshape in tensors:
        shape = list(reversed(npshape))                 # GGUF ne: fastest dimension first
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


def write_gguf(path, a, hp, weights, tok, q8_0=False):
    tj, cfg, pre, tokens, types, merges, ids = tok
    arch = a.arch
    kv = [gguf_kv('general.architecture', 8, arch), gguf_kv('general.name', 8, 'slm-hf-fixture'),
          gguf_kv('general.license', 8, 'MIT'),
          gguf_kv(arch + '.context_length', 4, hp['max_position_embeddings']),
          gguf_kv(arch + '.embedding_length', 4, hp['hidden_size']),
          gguf_kv(arch + '.block_count', 4, hp['num_hidden_layers']),
          gguf_kv(arch + '.feed_forward_length', 4, hp['intermediate_size']),
          gguf_kv(arch + '.attention.head_count', 4, hp['num_attention_heads']),
          gguf_kv(arch + '.attention.head_count_kv', 4, hp['num_key_value_heads']),
          gguf_kv(arch + '.attention.key_length', 4, hp['head_dim']),
          gguf_kv(arch + '.attention.value_length', 4, hp['head_dim']),
          gguf_kv(arch + '.rope.dimension_count', 4, hp['head_dim']),
          gguf_kv(arch + '.rope.freq_base', 6, hp['rope_theta']),
          gguf_kv(arch + '.attention.layer_norm_rms_epsilon', 6, hp['rms_norm_eps']),
          gguf_kv('tokenizer.ggml.model', 8, 'gpt2'), gguf_kv('tokenizer.ggml.pre', 8, pre),
          gguf_kv('tokenizer.ggml.tokens', 9, (8, tokens)), gguf_kv('tokenizer.ggml.token_type', 9, (5, types)),
          gguf_kv('tokenizer.ggml.merges', 9, (8, merges)),
          gguf_kv('tokenizer.ggml.add_bos_token', 7, False),
          gguf_kv('tokenizer.chat_template', 8, cfg['chat_template'])]
    for key, name in (('bos_token', 'bos'), ('eos_token', 'eos'), ('pad_token', 'padding'), ('unk_token', 'unknown')):
        if ids[key] is not None:
            kv.append(gguf_kv('tokenizer.ggml.%s_token_id' % name, 4, ids[key]))
    gtype = {'f32': 0, 'f16': 1, 'bf16': 30}[a.dtype]
    tensors = []
    for hf, w in weights:
        name = gguf_name(hf)
        if a.arch == 'llama' and name.endswith('attn_q.weight'):
            w = permute_rope(w, hp['num_attention_heads'])
        if a.arch == 'llama' and name.endswith('attn_k.weight'):
            w = permute_rope(w, hp['num_key_value_heads'])
        if w.ndim == 1:
            raw, t = w.astype('<f4').tobytes(), 0        # norms and biases: F32, as convert_hf_to_gguf does
            if a.dtype != 'f32':
                raw = encode(w, a.dtype)[1].astype('<f4').tobytes()   # same values as the HF copy
        elif q8_0:
            raw, t = q8_0_bytes(encode(w, a.dtype)[1]), 8
        else:
            raw, t = encode(w, a.dtype)[0], gtype
        tensors.append((name, raw, t, w.shape))
    write_gguf_tensors(path, kv, tensors)


# ---- LoRA adapters -------------------------------------------------------------

HF_MODULES = {'q_proj': 'self_attn.q_proj', 'k_proj': 'self_attn.k_proj', 'v_proj': 'self_attn.v_proj',
              'o_proj': 'self_attn.o_proj', 'gate_proj': 'mlp.gate_proj', 'up_proj': 'mlp.up_proj',
              'down_proj': 'mlp.down_proj'}


def make_lora(rng, weights, layers, targets, r):
    """PEFT module name -> (A [r, in], B [out, r]) for the targets in every layer (lm_head once)."""
    out = {}
    for t in targets:
        mods = ['lm_head'] if t == 'lm_head' else ['model.layers.%d.%s' % (l, HF_MODULES[t]) for l in range(layers)]
        for mod in mods:
            o, i = weights[mod + '.weight'].shape
            out[mod] = ((rng.standard_normal((r, i), dtype=np.float32) / np.sqrt(i)).astype(np.float32),
                        (0.4 * rng.standard_normal((o, r), dtype=np.float32) / np.sqrt(r)).astype(np.float32))
    return out


def write_peft(d, lora, cfg):
    """An adapter folder as PEFT's save_pretrained writes it."""
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'adapter_config.json'), 'w') as f:
        json.dump(cfg, f, indent=2)
    items = []
    for mod, (A, B) in lora.items():
        items.append(('base_model.model.%s.lora_A.weight' % mod, A))
        items.append(('base_model.model.%s.lora_B.weight' % mod, B))
    write_safetensors(os.path.join(d, 'adapter_model.safetensors'), items, 'f32')


def peft_config(r, alpha, targets, **extra):
    cfg = {'peft_type': 'LORA', 'task_type': 'CAUSAL_LM', 'base_model_name_or_path': 'slm-hf-fixture', 'r': r,
           'lora_alpha': alpha, 'lora_dropout': 0.0, 'target_modules': targets, 'bias': 'none',
           'fan_in_fan_out': False, 'use_rslora': False, 'use_dora': False, 'modules_to_save': None,
           'rank_pattern': {}, 'alpha_pattern': {}, 'inference_mode': True}
    cfg.update(extra)
    return cfg


def write_lora_gguf(path, a, hp, lora, alpha):
    """The adapter as llama.cpp's convert_lora_to_gguf.py writes it (llama: B's q/k rows permuted like the model's)."""
    kv = [gguf_kv('general.architecture', 8, a.arch), gguf_kv('general.type', 8, 'adapter'),
          gguf_kv('general.name', 8, 'slm-fixture-lora'), gguf_kv('adapter.type', 8, 'lora'),
          gguf_kv('adapter.lora.alpha', 6, alpha)]
    tensors = []
    for mod, (A, B) in lora.items():
        name = gguf_name(mod + '.weight')
        if a.arch == 'llama' and name.endswith('attn_q.weight'):
            B = permute_rope(B, hp['num_attention_heads'])
        if a.arch == 'llama' and name.endswith('attn_k.weight'):
            B = permute_rope(B, hp['num_key_value_heads'])
        tensors.append((name + '.lora_a', A.astype('<f4').tobytes(), 0, A.shape))
        tensors.append((name + '.lora_b', B.astype('<f4').tobytes(), 0, B.shape))
    write_gguf_tensors(path, kv, tensors)


def write_loras(out, a, hp, w):
    """Three adapters of the model (their own random numbers, after the model's): lora_plain (PEFT, r 4,
    alpha 8), lora_rs (PEFT, r 2, alpha 4, rsLoRA, fan_in_fan_out set as a Conv1D model would have it) and
    lora.gguf (llama.cpp, r 3, alpha 6) with its PEFT twin lora_gguf_twin; and the model in Q8_0 (model_q8_0.gguf)."""
    rng = np.random.default_rng(a.seed + 1000)
    plain = make_lora(rng, w, a.layers, ['q_proj', 'v_proj', 'down_proj'], 4)
    write_peft(os.path.join(out, 'lora_plain'), plain, peft_config(4, 8, ['q_proj', 'v_proj', 'down_proj']))
    rs = make_lora(rng, w, a.layers, ['q_proj', 'k_proj', 'o_proj', 'gate_proj', 'up_proj'], 2)
    write_peft(os.path.join(out, 'lora_rs'), rs,
               peft_config(2, 4, ['q_proj', 'k_proj', 'o_proj', 'gate_proj', 'up_proj'], use_rslora=True,
                           fan_in_fan_out=True))
    targets = ['q_proj', 'k_proj', 'up_proj'] + ([] if a.tied else ['lm_head'])
    gg = make_lora(rng, w, a.layers, targets, 3)
    write_peft(os.path.join(out, 'lora_gguf_twin'), gg, peft_config(3, 6, targets))
    write_lora_gguf(os.path.join(out, 'lora.gguf'), a, hp, gg, 6.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', required=True)
    ap.add_argument('--arch', choices=['llama', 'qwen2', 'qwen3'], default='llama')
    ap.add_argument('--vocab', choices=['smollm2', 'qwen2'], default='smollm2')
    ap.add_argument('--dtype', choices=['f32', 'f16', 'bf16'], default='f32')
    ap.add_argument('--tied', action='store_true')
    ap.add_argument('--shards', type=int, default=1)
    ap.add_argument('--seed', type=int, default=7)
    ap.add_argument('--dim', type=int, default=64)
    ap.add_argument('--layers', type=int, default=2)
    ap.add_argument('--heads', type=int, default=4)
    ap.add_argument('--kv-heads', type=int, default=2)
    ap.add_argument('--head-dim', type=int, default=0, help='default dim / heads')
    ap.add_argument('--ffn', type=int, default=128)
    ap.add_argument('--lora', action='store_true',
                    help='also write LoRA adapters of the model and a Q8_0 GGUF of it (see write_loras)')
    ap.add_argument('--fim', action='store_true',
                    help="Qwen2.5-Coder's added tokens, fill-in-the-middle ones included (needs --vocab qwen2)")
    ap.add_argument('--max-vocab', type=int, default=0,
                    help='keep only the tokens with smaller ids, and the merges among them (small fuzz seeds)')
    ap.add_argument('--models', default=os.environ.get('SLM_MODELS', os.path.join(HERE, '..', '..', 'shared', 'models')))
    a = ap.parse_args()
    head_dim = a.head_dim or a.dim // a.heads
    if a.arch == 'qwen2' and head_dim * a.heads != a.dim:
        sys.exit('qwen2 needs heads * head_dim == dim')

    if a.fim and a.vocab != 'qwen2':
        sys.exit('--fim needs --vocab qwen2 (Qwen2.5-Coder\'s added tokens)')
    tok = load_tokenizer(a.models, a.vocab, a.max_vocab, a.fim)
    tj, cfg = tok[0], tok[1]
    n_vocab = len(tok[3])
    rng = np.random.default_rng(a.seed)
    w = make_weights(rng, a.arch, a.dim, a.layers, a.heads, a.kv_heads, head_dim, a.ffn, n_vocab, a.tied)
    cls = {'llama': 'LlamaForCausalLM', 'qwen2': 'Qwen2ForCausalLM', 'qwen3': 'Qwen3ForCausalLM'}[a.arch]
    hp = {'architectures': [cls], 'model_type': a.arch, 'hidden_size': a.dim, 'intermediate_size': a.ffn,
          'num_hidden_layers': a.layers, 'num_attention_heads': a.heads, 'num_key_value_heads': a.kv_heads,
          'head_dim': head_dim, 'max_position_embeddings': 2048, 'rope_theta': 100000.0, 'rms_norm_eps': 1e-05,
          'tie_word_embeddings': a.tied, 'vocab_size': n_vocab, 'rope_scaling': None, 'hidden_act': 'silu',
          'torch_dtype': {'f32': 'float32', 'f16': 'float16', 'bf16': 'bfloat16'}[a.dtype],
          'attention_bias': a.arch == 'qwen2', 'bos_token_id': tok[6]['bos_token'], 'eos_token_id': tok[6]['eos_token']}

    hf_dir = os.path.join(a.out, 'hf')
    os.makedirs(hf_dir, exist_ok=True)
    for f in os.listdir(hf_dir):
        os.remove(os.path.join(hf_dir, f))
    with open(os.path.join(hf_dir, 'config.json'), 'w') as f:
        json.dump(hp, f, indent=2)
    with open(os.path.join(hf_dir, 'tokenizer.json'), 'w', encoding='utf-8') as f:
        json.dump(tj, f, ensure_ascii=True)        # \uXXXX escapes, surrogate pairs included
    with open(os.path.join(hf_dir, 'tokenizer_config.json'), 'w', encoding='utf-8') as f:
        json.dump(cfg, f, indent=2, ensure_ascii=False)
    items = list(w.items())
    if a.shards <= 1:
        write_safetensors(os.path.join(hf_dir, 'model.safetensors'), items, a.dtype)
    else:
        per = -(-len(items) // a.shards)
        wmap, total = {}, 0
        for s in range(a.shards):
            fn = 'model-%05d-of-%05d.safetensors' % (s + 1, a.shards)
            part = items[s * per:(s + 1) * per]
            total += write_safetensors(os.path.join(hf_dir, fn), part, a.dtype)
            for name, _ in part:
                wmap[name] = fn
        with open(os.path.join(hf_dir, 'model.safetensors.index.json'), 'w') as f:
            json.dump({'metadata': {'total_size': total}, 'weight_map': wmap}, f, indent=2)
    write_gguf(os.path.join(a.out, 'model.gguf'), a, hp, items, tok)
    if a.lora:
        write_gguf(os.path.join(a.out, 'model_q8_0.gguf'), a, hp, items, tok, q8_0=True)
        write_loras(a.out, a, hp, w)
    print('wrote %s (Hugging Face folder) and %s: %s, %d tokens, dim %d, %d layers, %s%s' % (
        hf_dir, os.path.join(a.out, 'model.gguf'), a.arch, n_vocab, a.dim, a.layers, a.dtype, ', tied' if a.tied else ''))


if __name__ == '__main__':
    main()
