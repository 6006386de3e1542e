#!/usr/bin/env bash
# tests/fuzz/make-corpus.sh - regenerates the seed corpora tests/fuzz/corpus/TARGET/
# from our own tools: tiny random-weight models written by tests/fuzz/gen_seeds.py
# (llama2.c checkpoint + tokenizer.bin, SentencePiece GGUF) and tests/gen_hf_fixture.py
# (Hugging Face folders and their GGUF twins, vocabularies cut to 300 tokens), converted
# by ./slm-convert; texts and chat messages written here. Nothing is copied from the
# shared models (gen_hf_fixture.py reads its tokenizer.json there and keeps 300 tokens).
# The corpus is committed (CI replays it): run this after a format change, then
# commit tests/fuzz/corpus/. Files named repro-* (a crash the fuzzer found, kept
# as a regression input) are not regenerated. Needs ./slm-convert (make) and numpy for
# ${SLM_TEST_PYTHON:-/usr/bin/python3}.
set -eu
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PY=${SLM_TEST_PYTHON:-/usr/bin/python3}
CONVERT=${SLM_CONVERT_BIN:-./slm-convert}
export SLM_MODELS=${SLM_MODELS:-../shared/models}
[ -x "$CONVERT" ] || { echo "make-corpus.sh: $CONVERT not built (make)" >&2; exit 1; }
"$PY" -c 'import numpy' 2>/dev/null || { echo "make-corpus.sh: numpy missing for $PY" >&2; exit 1; }

W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
C=tests/fuzz/corpus
# repro-*: reproducers of bugs the fuzzers found, kept as they are
mkdir -p "$C"/{load,tokenize,gguf,hf,llama2c,chat,grammar,schema}
find "$C" -type f ! -name 'repro-*' -delete

# fuzz_grammar.c: a flag byte (bit 0: start at the first rule), then GBNF text: the example grammars and a few by hand
for f in tests/data/grammars/*.gbnf; do
    { printf '\000'; cat "$f"; } >"$C/grammar/$(basename "$f" .gbnf)"
done
g() { { printf "\\$(printf '%03o' "$1")"; printf '%s' "$3"; } >"$C/grammar/$2"; }
g 0 classes 'root ::= [^"\\] [α-ω]+ [^a]? . "\x41\u00e9\U0001F600\n\t\[\]\-" [a-z0-9_-]{2,5}'
g 1 start-expr 'expr ::= term ("+" term)*
term ::= [0-9]+ | "(" expr ")"   # comment'
g 0 repeats 'root ::= ("ab"{3} | "c"{2,} | ("d" | )? "e"{1,4})* x
x ::= (
  "y" |
  "z"
)'
g 0 left-recursive 'root ::= a
a ::= b "x" | "z"
b ::= "y"? a'
g 0 errors 'root ::= <[12]> "\q" {3,2} ((((x'

# ---- models ----
"$PY" tests/fuzz/gen_seeds.py --out "$W/s"
small="--max-vocab 300 --dim 32 --heads 2 --kv-heads 1 --ffn 32 --layers 1"
# shellcheck disable=SC2086
"$PY" tests/gen_hf_fixture.py --out "$W/llama" --arch llama --dtype f16 --tied $small >/dev/null
# shellcheck disable=SC2086
"$PY" tests/gen_hf_fixture.py --out "$W/qwen2" --arch qwen2 --vocab qwen2 --dtype bf16 --tied $small >/dev/null
# shellcheck disable=SC2086
"$PY" tests/gen_hf_fixture.py --out "$W/qwen3" --arch qwen3 --dtype f32 --head-dim 16 $small >/dev/null

cv() { "$CONVERT" -q "$@"; }
cv --type f32 "$W/s/tiny.bin" "$W/s/tiny_tok.bin" "$W/llama2c_f32.slm"
cv --type q8_0 "$W/s/tiny.bin" "$W/s/tiny_tok.bin" "$W/llama2c_q8_0_r16.slm"
cv --type q4_0 --no-interleave "$W/s/tiny_sep.bin" "$W/s/tiny_tok.bin" "$W/llama2c_sep_q4_0.slm"
cv "$W/s/tiny_spm.gguf" "$W/spm_f16.slm"
cv --type q4_0 "$W/llama/hf" "$W/llama_q4_0_r16.slm"
cv "$W/qwen2/model.gguf" "$W/qwen2_bf16.slm"
cv --type q8_0 --no-interleave "$W/qwen3/hf" "$W/qwen3_q8_0.slm"
cv --vocab-only "$W/qwen2/hf" "$W/qwen2_vocab.slm"

# ---- the corpora: fuzz.h's framing (FUZZ_SEP) and fuzz_load.c's option bytes ----
"$PY" - "$W" "$C" <<'EOF'
import os, sys
W, C = sys.argv[1], sys.argv[2]
SEP = b'\n#slm-fuzz-file#\n'

def rd(*p):
    return open(os.path.join(W, *p), 'rb').read()

def put(target, name, data):
    open(os.path.join(C, target, name), 'wb').write(data)

for n in ('llama', 'qwen2', 'qwen3'):
    put('gguf', n + '.gguf', rd(n, 'model.gguf'))
    put('hf', n, SEP.join(rd(n, 'hf', f) for f in
                          ('config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json')))
put('gguf', 'spm.gguf', rd('s', 'tiny_spm.gguf'))
put('llama2c', 'shared', rd('s', 'tiny.bin') + SEP + rd('s', 'tiny_tok.bin'))
put('llama2c', 'separate', rd('s', 'tiny_sep.bin') + SEP + rd('s', 'tiny_tok.bin'))

# fuzz_load.c: 32 option bytes, then the .slm file; each seed its own
# temperature class, KV type and option bits
models = ['llama2c_f32', 'llama2c_q8_0_r16', 'llama2c_sep_q4_0', 'spm_f16', 'llama_q4_0_r16', 'qwen2_bf16',
          'qwen3_q8_0', 'qwen2_vocab']
prompts = [b'Once upon a time', b'Hello world', b'<|im_start|>user', b'Lily was happy.', b'\xc3\xa9t\xc3\xa9 123',
           b'the', b'<s>x</s>', b'']
for i, m in enumerate(models):
    op = bytes([i % 8, 40, 180, 13, 40 if i % 2 else 0, 16, 15 + i, i % 4, 3 + i, (i * 0x2B) & 0x3F,
                i, 0, 0, 0, 0, 12]) + prompts[i].ljust(16, b'\0')
    put('load', m, op + rd(m + '.slm'))

texts = [
    'Once upon a time, there was a little girl named Lily. She was happy.',
    'Hello world! 123 4567 89 <|im_end|><s></s> <|endoftext|><|im_start|>assistant\n',
    '\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440 \u4f60\u597d\u4e16\u754c \u3053\u3093\u306b\u3061\u306f '
    '\U0001F642 \u00e9 n\u0303 \u0928\u092e\u0938\u094d\u0924\u0947',
    '  \t\n\n  x  \r\n\u00a0\u3000 end   ',
    '\u2581hello\u2581 world \u2581\u2581',
    "'s 't 're I'm don't WE'LL 'S",
    'int main(void) {\n    return 0; // 42\n}\n',
]
texts = [t.encode('utf-8') for t in texts] + [b'\xff\xfe\xc0\x80 ok \xed\xa0\x80 \xf4\x90\x80\x80\x00z']
# fuzz_tokenize.c: the first byte picks the vocabulary (six by default)
for v in range(6):
    for i, t in enumerate(texts):
        if (i + v) % 2 == 0:
            put('tokenize', 'v%d_text%d' % (v, i), bytes([v]) + t)

# fuzz_chat.c: template, flags, then role NUL content NUL ...
def chat(tmpl, flags, *msgs):
    return bytes([tmpl, flags]) + b'\0'.join(s.encode() for s in msgs)
for t in range(9):
    put('chat', 'tmpl%d' % t, chat(t, 1 + 2 * t, 'system', 'You are helpful.', 'user', 'Hi <|im_end|>',
                                   'assistant', 'Hello!', 'user', 'And now?'))
put('chat', 'roles', chat(1, 0, '\x02', 'a', '\x03', 'b', '\x05', 'c', 'weird role', 'd', '', 'e'))
put('chat', 'default_system', chat(1, 2, 'user', 'x', "{% set system_message = 'Be brief.\\n' %}",
                                   "<|im_start|>system\\nYou are Qwen.<|im_end|>"))
EOF
# fuzz_schema.c: JSON Schemas (the supported subset, each keyword and some
# errors) and JSON texts the reader must refuse; one file each
"$PY" - "$C/schema" <<'EOF'
import json, os, sys
out = sys.argv[1]
def obj(props, req=None, **kw):
    s = dict(type='object', properties=props, **kw)
    if req: s['required'] = req
    return s
S, I, N, B = {'type': 'string'}, {'type': 'integer'}, {'type': 'number'}, {'type': 'boolean'}
schemas = {
    'string': S, 'integer': I, 'number': N, 'boolean': B, 'null': {'type': 'null'}, 'any': {}, 'true': True,
    'object_any': {'type': 'object'}, 'array_any': {'type': 'array'},
    'person': obj({'name': S, 'age': I, 'email': S, 'admin': B}, ['name', 'age'], additionalProperties=False),
    'optional_only': obj({'a': S, 'b': N, 'c': {'type': ['string', 'null']}}),
    'nested': obj({'address': obj({'street': S, 'city': S, 'zip': {'type': 'string'}}, ['city']),
                   'tags': {'type': 'array', 'items': S, 'minItems': 1, 'maxItems': 4}}, ['address']),
    'arrays': obj({'a': {'type': 'array', 'items': I, 'maxItems': 1}, 'b': {'type': 'array', 'items': N, 'minItems': 2},
                   'c': {'type': 'array', 'items': B, 'minItems': 3, 'maxItems': 3}, 'd': {'items': S}}),
    'enum_const': obj({'color': {'enum': ['red', 'green', 'blue']}, 'v': {'const': 2},
                       'mixed': {'enum': [1, 'one', None, True, {'k': [1, 2]}, 2.5e3]}}, ['color', 'v']),
    'typed_enum': {'type': ['string', 'integer'], 'enum': ['x', 3, 4.0]},
    'map': {'type': 'object', 'additionalProperties': {'type': 'array', 'items': I}},
    'closed_empty': {'type': 'object', 'additionalProperties': False},
    'defs_tree': {'$defs': {'node': obj({'value': I, 'children': {'type': 'array', 'items': {'$ref': '#/$defs/node'}}},
                                        ['value'])}, '$ref': '#/$defs/node'},
    'definitions_list': {'definitions': {'cell': obj({'v': S, 'next': {'$ref': '#/definitions/cell'}}, ['v'])},
                         'type': 'object', 'properties': {'head': {'$ref': '#/definitions/cell'}}},
    'annotations': {'$schema': 'https://json-schema.org/draft/2020-12/schema', '$id': 'urn:x', 'title': 't',
                    'description': 'd', 'type': 'object', '$comment': 'c',
                    'properties': {'q': {'type': 'string', 'default': 'a', 'examples': ['b']}}},
    'names': obj({'a b': S, 'a_b': I, '\u00e9t\u00e9': N, '': B, 'root': S, 'string': I, 'x/y~z': S,
                  'quote"back\\slash\n': S}),
    'err_pattern': obj({'name': {'type': 'string', 'pattern': '^a+$'}}),
    'err_anyof': {'anyOf': [S, I]},
    'err_items_order': {'type': 'array', 'minItems': 3, 'maxItems': 1},
    'err_required': obj({'a': S}, ['a', 'b']),
    'err_enum_type': {'type': 'string', 'enum': ['a', 1]},
    'err_cycle': {'$defs': {'n': obj({'next': {'$ref': '#/$defs/n'}}, ['next'])}, '$ref': '#/$defs/n'},
    'err_ref': {'$ref': '#/$defs/missing'},
    'err_ref_empty_name': {'definitions': {'a': {}}, 'type': 'object', 'properties': {'h': {'$ref': '#/definitions/'}}},
    'err_empty_enum': {'enum': []},
}
for name, s in schemas.items():
    open(os.path.join(out, name + '.json'), 'w', encoding='utf-8').write(json.dumps(s, ensure_ascii=False, indent=1))
raw = {
    'json_escapes': b'{"const": "\\u0041\\u00e9\\ud83d\\ude00\\n\\t\\"\\\\\\/\\b\\f\\r"}',
    'json_numbers': b'{"enum": [0, -0, 1e400, -1.5E-7, 123456789012345678901234567890, 0.000]}',
    'json_trailing_comma': b'{"type": "string",}',
    'json_comment': b'{"type": "string"} // no',
    'json_lone_surrogate': b'{"const": "\\udc00"}',
    'json_bad_utf8': b'{"const": "\xc3\x28"}',
    'json_deep': b'[' * 70 + b']' * 70,
    'json_duplicate': b'{"type": "string", "type": "integer"}',
    'json_bom': b'\xef\xbb\xbf{"type": "null"}',
}
for name, data in raw.items():
    open(os.path.join(out, name), 'wb').write(data)
EOF
du -sh "$C" "$C"/*
