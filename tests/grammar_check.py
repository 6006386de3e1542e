#!/usr/bin/env python3
"""tests/grammar_check.py - an independent recognizer for llama.cpp's GBNF.

Written from llama.cpp's grammars/README.md (and the grammars beside it) for
the tests of slm.h's grammars; it shares no code and no design with slm.h
(which compiles to rules over bytes and steps parse stacks): this one parses
GBNF into a tree of nodes over Unicode code points and matches by
backtracking, each rule's set of end positions memoized per start position.

  grammar_check.py GRAMMAR.gbnf [--prefix] < TEXT
      exit 0 when TEXT (bytes, UTF-8) is a sentence of the grammar (--prefix:
      can be extended to one), 1 with the reason on stderr when not, 2 when
      the grammar itself does not parse.
  grammar_check.py --batch LIST
      LIST has one check a line, tab-separated: MODE ARG TEXTFILE [LABEL]
        full   GRAMMAR  TEXTFILE   the whole text is a sentence
        prefix GRAMMAR  TEXTFILE   the text can be extended to a sentence
        json   -        TEXTFILE   one JSON document (strict: no NaN/Infinity)
        schema SCHEMA   TEXTFILE   a JSON document valid under the schema
                                   (tests/schema_check.py's subset)
        jsonws -        TEXTFILE   JSON text, complete or cut: whitespace
                                   outside strings in at most two gaps as
                                   llama.cpp bounds them (" " or
                                   "\n"{1,2} [ \t]{0,20})
      prints one line per failed check and "N checked (N texts, N bytes), N
      failed"; exit 1 when
      any failed.
  grammar_check.py --self-test
      the table of strings that must and must not match, per construct.

Semantics (llama.cpp's, and slm.h's spec): characters are code points; `.`
and negated classes match any code point but the excluded ones, never a
surrogate (U+D800-DFFF), up to U+10FFFF. In --prefix mode the text may end
inside a UTF-8 character: it is a prefix when some code point starting with
those bytes continues it. Python standard library only.
"""

import json
import os
import re
import sys

sys.setrecursionlimit(20000)

MAX_CP = 0x10FFFF
SURROGATES = (0xD800, 0xDFFF)


class GrammarError(Exception):
    pass


# ---------------------------------------------------------------------------
# parser: GBNF text -> {rule name: node}
#   node = ('chars', ((lo, hi), ...), negated)   one code point
#        | ('seq', [node, ...])                  one after the other
#        | ('alt', [node, ...])                  one of them
#        | ('ref', name)                         a rule
#        | ('rep', node, min, max or None)       repeated
# ---------------------------------------------------------------------------

def is_word_char(c):
    return c == '-' or ('a' <= c <= 'z') or ('A' <= c <= 'Z') or ('0' <= c <= '9')


class Parser:
    def __init__(self, text):
        self.s = text
        self.i = 0
        self.rules = {}

    def where(self, i=None):
        i = self.i if i is None else i
        line = self.s.count('\n', 0, i) + 1
        col = i - (self.s.rfind('\n', 0, i) + 1) + 1
        return "line %d, column %d" % (line, col)

    def fail(self, msg, i=None):
        raise GrammarError("%s: %s" % (self.where(i), msg))

    def peek(self, k=0):
        j = self.i + k
        return self.s[j] if j < len(self.s) else ''

    def space(self, newline_ok):
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in ' \t':
                self.i += 1
            elif c == '#':
                while self.i < len(s) and s[self.i] not in '\r\n':
                    self.i += 1
            elif c in '\r\n' and newline_ok:
                self.i += 1
            else:
                break

    def name(self):
        start = self.i
        while self.i < len(self.s) and is_word_char(self.s[self.i]):
            self.i += 1
        if self.i == start:
            self.fail("expecting a rule name")
        return self.s[start:self.i]

    def integer(self):
        start = self.i
        while self.peek().isdigit() and self.peek() in '0123456789':
            self.i += 1
        if self.i == start:
            self.fail("expecting a number")
        return int(self.s[start:self.i])

    def hex_escape(self, digits):
        h = self.s[self.i:self.i + digits]
        if len(h) != digits or any(c not in '0123456789abcdefABCDEF' for c in h):
            self.fail("expecting %d hex digits" % digits)
        self.i += digits
        v = int(h, 16)
        if v > MAX_CP:
            self.fail("code point above U+10FFFF")
        return v

    def char(self):
        """One character of a literal or a class, escapes resolved: its code point."""
        c = self.peek()
        if c == '':
            self.fail("unexpected end of input")
        if c != '\\':
            self.i += 1
            return ord(c)
        e = self.peek(1)
        self.i += 2
        if e == 'x':
            return self.hex_escape(2)
        if e == 'u':
            return self.hex_escape(4)
        if e == 'U':
            return self.hex_escape(8)
        simple = {'t': 9, 'r': 13, 'n': 10, '\\': 92, '"': 34, '[': 91, ']': 93}
        if e in simple:
            return simple[e]
        self.fail("unknown escape \\%s" % e, self.i - 2)

    def literal(self):
        start = self.i
        self.i += 1  # the opening quote
        chars = []
        while self.peek() != '"':
            if self.peek() == '':
                self.fail("unterminated string literal", start)
            cp = self.char()
            chars.append(('chars', ((cp, cp),), False))
        self.i += 1
        return ('seq', chars)

    def char_class(self):
        start = self.i
        self.i += 1  # [
        negated = False
        if self.peek() == '^':
            negated = True
            self.i += 1
        ranges = []
        while self.peek() != ']':
            if self.peek() == '':
                self.fail("unterminated character class", start)
            lo = self.char()
            hi = lo
            if self.peek() == '-' and self.peek(1) not in (']', ''):
                self.i += 1
                hi = self.char()
                if hi < lo:
                    self.fail("range %04X-%04X runs backwards" % (lo, hi))
            ranges.append((lo, hi))
        self.i += 1
        return ('chars', tuple(ranges), negated)

    def sequence(self, nested):
        items = []
        while True:
            c = self.peek()
            if c == '"':
                items.append(self.literal())
            elif c == '[':
                items.append(self.char_class())
            elif c != '' and is_word_char(c):
                items.append(('ref', self.name()))
            elif c == '(':
                self.i += 1
                self.space(True)
                node = self.alternates(True)
                if self.peek() != ')':
                    self.fail("expecting ')'")
                self.i += 1
                items.append(node)
            elif c == '.':
                self.i += 1
                items.append(('chars', (), True))
            elif c in ('*', '+', '?'):
                if not items:
                    self.fail("'%s' with nothing before it" % c)
                lo, hi = {'*': (0, None), '+': (1, None), '?': (0, 1)}[c]
                items[-1] = ('rep', items[-1], lo, hi)
                self.i += 1
            elif c == '{':
                if not items:
                    self.fail("'{' with nothing before it")
                self.i += 1
                self.space(nested)
                lo = self.integer()
                self.space(nested)
                hi = lo
                if self.peek() == ',':
                    self.i += 1
                    self.space(nested)
                    hi = None
                    if self.peek().isdigit():
                        hi = self.integer()
                        self.space(nested)
                if self.peek() != '}':
                    self.fail("expecting '}'")
                self.i += 1
                if hi is not None and hi < lo:
                    self.fail("repetition {%d,%d}: max below min" % (lo, hi))
                items[-1] = ('rep', items[-1], lo, hi)
            else:
                break
            self.space(nested)
        return ('seq', items)

    def alternates(self, nested):
        alts = [self.sequence(nested)]
        while self.peek() == '|':
            self.i += 1
            self.space(True)
            alts.append(self.sequence(nested))
        return alts[0] if len(alts) == 1 else ('alt', alts)

    def grammar(self):
        self.space(True)
        while self.i < len(self.s):
            start = self.i
            name = self.name()
            self.space(False)
            if self.s[self.i:self.i + 3] != '::=':
                self.fail("expecting ::=")
            self.i += 3
            self.space(True)
            body = self.alternates(False)
            if self.peek() == '\r':
                self.i += 1
            if self.peek() == '\n':
                self.i += 1
            elif self.peek() != '':
                self.fail("expecting newline or end, found %r" % self.peek())
            if name in self.rules:
                self.fail("rule %s defined twice" % name, start)
            self.rules[name] = body
            self.space(True)
        return self.rules


def node_refs(node, out):
    t = node[0]
    if t == 'ref':
        out.append(node[1])
    elif t in ('seq', 'alt'):
        for n in node[1]:
            node_refs(n, out)
    elif t == 'rep':
        node_refs(node[1], out)
    return out


def chars_intersect(node, ranges):
    """Does the one-code-point node match some code point of ranges (surrogate-free)?"""
    _, cls, negated = node
    if not negated:
        return any(lo <= h and l <= hi for (lo, hi) in cls for (l, h) in ranges)
    for (l, h) in ranges:
        # the code points of l..h that no excluded range covers
        pos = l
        for (lo, hi) in sorted(cls):
            if hi < pos:
                continue
            if lo > pos:
                break
            pos = hi + 1
        if pos <= h:
            return True
    return False


class Grammar:
    def __init__(self, text):
        self.rules = Parser(text).grammar()
        if 'root' not in self.rules:
            raise GrammarError("no root rule")
        for name, body in self.rules.items():
            for r in node_refs(body, []):
                if r not in self.rules:
                    raise GrammarError("rule %s refers to undefined rule %s" % (name, r))
        # which rules have a non-empty language (a fixpoint)
        self.productive = {name: False for name in self.rules}
        changed = True
        while changed:
            changed = False
            for name, body in self.rules.items():
                if not self.productive[name] and self.nonempty(body):
                    self.productive[name] = changed = True
        if not self.productive['root']:
            raise GrammarError("rule root can never match")

    def nonempty(self, node):
        t = node[0]
        if t == 'chars':
            return chars_intersect(node, ((0, 0xD7FF), (0xE000, MAX_CP)))
        if t == 'seq':
            return all(self.nonempty(n) for n in node[1])
        if t == 'alt':
            return any(self.nonempty(n) for n in node[1])
        if t == 'ref':
            return self.productive[node[1]]
        return node[2] == 0 or self.nonempty(node[1])


# ---------------------------------------------------------------------------
# matcher: backtracking over code points; ends(node, i) is the set of
# positions j where node matches text[i:j]; pre(node, i) says whether
# text[i:] (+ the partial character, if any) starts some string of node's
# language. Rules are memoized per start position; a rule entered again at
# the same position before it returned is left recursion (GBNF forbids it).
# ---------------------------------------------------------------------------

def partial_range(tail):
    """Code points whose UTF-8 starts with the bytes tail (an incomplete
    character): a list of ranges, empty when no code point does."""
    b0 = tail[0]
    if 0xC2 <= b0 <= 0xDF:
        k, lo_min = 2, 0x80
    elif 0xE0 <= b0 <= 0xEF:
        k, lo_min = 3, 0x800
    elif 0xF0 <= b0 <= 0xF4:
        k, lo_min = 4, 0x10000
    else:
        return []
    if len(tail) >= k or any(not 0x80 <= b <= 0xBF for b in tail[1:]):
        return []
    lo_bytes = bytes(tail) + b'\x80' * (k - len(tail))
    hi_bytes = bytes(tail) + b'\xbf' * (k - len(tail))

    def raw(bs):  # decode without the checks that would refuse overlongs
        v = bs[0] & (0xFF >> (k + 1))
        for b in bs[1:]:
            v = (v << 6) | (b & 0x3F)
        return v

    lo, hi = max(raw(lo_bytes), lo_min), min(raw(hi_bytes), MAX_CP)
    out = []
    for (l, h) in ((lo, min(hi, SURROGATES[0] - 1)), (max(lo, SURROGATES[1] + 1), hi)):
        if l <= h:
            out.append((l, h))
    return out


def split_utf8(data):
    """bytes -> (code points, partial-character ranges or None); ValueError
    when the bytes are not UTF-8 (apart from an incomplete last character)."""
    cut = len(data)
    for back in (1, 2, 3):
        if back > len(data):
            break
        b = data[-back]
        if b & 0xC0 != 0x80:  # a lead byte (or ASCII)
            need = 2 if 0xC0 <= b <= 0xDF else 3 if 0xE0 <= b <= 0xEF else 4 if b >= 0xF0 else 1
            if need > back:
                cut = len(data) - back
            break
    try:
        text = data[:cut].decode('utf-8', errors='strict')
    except UnicodeDecodeError as e:
        raise ValueError("not UTF-8 at byte %d: %s" % (e.start, e.reason))
    partial = None
    if cut < len(data):
        partial = partial_range(data[cut:])
        if not partial:
            raise ValueError("not UTF-8: the last bytes %s start no character" % data[cut:].hex())
    return [ord(c) for c in text], partial


class Matcher:
    def __init__(self, grammar, cps, partial):
        self.g = grammar
        self.c = cps
        self.n = len(cps)
        self.partial = partial
        self.memo_ends = {}
        self.memo_pre = {}
        self.active = set()
        self.furthest = 0

    def match_char(self, node, cp):
        _, cls, negated = node
        inside = any(lo <= cp <= hi for (lo, hi) in cls)
        if negated:
            return not inside and not SURROGATES[0] <= cp <= SURROGATES[1]
        return inside

    def enter(self, key, name, i):
        if key in self.active:
            raise GrammarError("left recursion: rule %s again at code point %d before it matched anything" % (name, i))
        self.active.add(key)

    def ends(self, node, i):
        t = node[0]
        if t == 'chars':
            if i < self.n and self.match_char(node, self.c[i]):
                if i + 1 > self.furthest:
                    self.furthest = i + 1
                return {i + 1}
            return set()
        if t == 'seq':
            pos = {i}
            for item in node[1]:
                nxt = set()
                for p in pos:
                    nxt |= self.ends(item, p)
                pos = nxt
                if not pos:
                    break
            return pos
        if t == 'alt':
            out = set()
            for a in node[1]:
                out |= self.ends(a, i)
            return out
        if t == 'ref':
            key = (node[1], i)
            r = self.memo_ends.get(key)
            if r is None:
                self.enter(('e',) + key, node[1], i)
                r = frozenset(self.ends(self.g.rules[node[1]], i))
                self.active.discard(('e',) + key)
                self.memo_ends[key] = r
            return r
        # rep
        _, x, lo, hi = node
        out = set()
        if lo == 0:
            out.add(i)
        cur = {i}
        k = 0
        while cur and (hi is None or k < hi):
            nxt = set()
            for p in cur:
                nxt |= self.ends(x, p)
            k += 1
            if hi is None and k >= lo:
                # from here on any count is fine: every position reachable
                seen = set(nxt)
                frontier = nxt
                while frontier:
                    more = set()
                    for p in frontier:
                        more |= self.ends(x, p)
                    frontier = more - seen
                    seen |= frontier
                out |= seen
                break
            if k >= lo:
                out |= nxt
            if nxt == cur and k >= lo:
                break  # x matched only empty: more rounds change nothing
            cur = nxt
        return out

    def pre(self, node, i):
        if i == self.n and self.partial is None:
            return self.g.nonempty(node)
        t = node[0]
        if t == 'chars':
            return i == self.n and chars_intersect(node, self.partial)
        if t == 'seq':
            items = node[1]
            pos = {i}
            for j, item in enumerate(items):
                if any(self.pre(item, p) for p in pos) and all(self.g.nonempty(r) for r in items[j + 1:]):
                    return True
                nxt = set()
                for p in pos:
                    nxt |= self.ends(item, p)
                pos = nxt
                if not pos:
                    return False
            return False
        if t == 'alt':
            return any(self.pre(a, i) for a in node[1])
        if t == 'ref':
            key = (node[1], i)
            r = self.memo_pre.get(key)
            if r is None:
                self.enter(('p',) + key, node[1], i)
                r = self.pre(self.g.rules[node[1]], i)
                self.active.discard(('p',) + key)
                self.memo_pre[key] = r
            return r
        # rep: reaching a position in fewer rounds leaves more rounds, so
        # each position is tried once
        _, x, lo, hi = node
        seen = {i}
        cur = {i}
        k = 0
        while cur and (hi is None or k < hi):
            if any(self.pre(x, p) for p in cur):
                return True
            nxt = set()
            for p in cur:
                nxt |= self.ends(x, p)
            cur = nxt - seen
            seen |= cur
            k += 1
        return False


def check_text(grammar, data, prefix):
    """(ok, reason) for bytes data under grammar."""
    try:
        cps, partial = split_utf8(data)
    except ValueError as e:
        return False, str(e)
    if partial is not None and not prefix:
        return False, "the text ends inside a UTF-8 character"
    m = Matcher(grammar, cps, partial)
    root = ('ref', 'root')
    if partial is None and m.n in m.ends(root, 0):
        return True, "a sentence" if not prefix else "a sentence (so a prefix)"
    if prefix and m.pre(root, 0):
        return True, "a prefix"
    at = m.furthest
    byte_at = len(''.join(chr(c) for c in cps[:at]).encode('utf-8', 'surrogatepass'))
    near = ''.join(chr(c) for c in cps[max(0, at - 20):at + 10])
    what = "a prefix of a sentence" if prefix else "a sentence"
    if partial is None and not prefix and m.pre(root, 0):
        return False, "not %s: the text is incomplete (a prefix only)" % what
    return False, "not %s: no parse past code point %d (byte %d) of %d, near %r" % (what, at, byte_at, m.n, near)


class TooDeep(Exception):
    pass


class Generator:
    """Random sentences of a grammar, for the self-test: every sentence must
    match in full, and its byte prefixes (some inside a character) as prefixes."""

    def __init__(self, grammar, rng):
        self.g = grammar
        self.rng = rng
        inf = float('inf')
        self.minlen = {name: inf for name in grammar.rules}
        changed = True
        while changed:
            changed = False
            for name, body in grammar.rules.items():
                m = self.min_len(body)
                if m < self.minlen[name]:
                    self.minlen[name] = m
                    changed = True

    def min_len(self, node):
        t = node[0]
        if t == 'chars':
            return 1
        if t == 'seq':
            return sum(self.min_len(n) for n in node[1])
        if t == 'alt':
            return min(self.min_len(n) for n in node[1])
        if t == 'ref':
            return self.minlen[node[1]]
        return node[2] * self.min_len(node[1]) if node[2] else 0

    def code_point(self, node):
        _, cls, negated = node
        if not negated:
            lo, hi = self.rng.choice(cls)
            for _ in range(100):
                cp = self.rng.randint(lo, min(hi, lo + 300) if self.rng.random() < 0.7 else hi)
                if not SURROGATES[0] <= cp <= SURROGATES[1]:
                    return cp
            raise TooDeep()
        for _ in range(1000):
            r = self.rng.random()
            cp = self.rng.randint(0x20, 0x7E) if r < 0.6 else self.rng.randint(0, 0x7FF) if r < 0.8 else \
                self.rng.randint(0, MAX_CP)
            if not SURROGATES[0] <= cp <= SURROGATES[1] and not any(lo <= cp <= hi for (lo, hi) in cls):
                return cp
        raise TooDeep()

    def gen(self, node, depth, out):
        if depth > 400:
            raise TooDeep()
        t = node[0]
        if t == 'chars':
            out.append(self.code_point(node))
        elif t == 'seq':
            for n in node[1]:
                self.gen(n, depth + 1, out)
        elif t == 'alt':
            alts = [a for a in node[1] if self.min_len(a) != float('inf')]
            if depth > 40:
                best = min(self.min_len(a) for a in alts)
                alts = [a for a in alts if self.min_len(a) == best]
            self.gen(self.rng.choice(alts), depth + 1, out)
        elif t == 'ref':
            self.gen(self.g.rules[node[1]], depth + 1, out)
        else:
            _, x, lo, hi = node
            top = lo if depth > 40 else lo + 3 if hi is None else min(hi, lo + 3)
            for _ in range(self.rng.randint(lo, top)):
                self.gen(x, depth + 1, out)

    def sentence(self):
        while True:
            out = []
            try:
                self.gen(('ref', 'root'), 0, out)
            except TooDeep:
                continue
            return ''.join(chr(c) for c in out).encode('utf-8')


_grammar_cache = {}


def load_grammar(path):
    g = _grammar_cache.get(path)
    if g is None:
        with open(path, 'rb') as f:
            text = f.read().decode('utf-8')
        g = _grammar_cache[path] = Grammar(text)
    return g


def reject_constant(name):
    raise ValueError("%s is not JSON" % name)


def parse_json_strict(data):
    """bytes -> Python value; ValueError for anything RFC 8259 refuses."""
    try:
        text = data.decode('utf-8', errors='strict')
    except UnicodeDecodeError as e:
        raise ValueError("not UTF-8 at byte %d" % e.start)
    return json.loads(text, parse_constant=reject_constant)


# llama.cpp's "space" of its JSON Schema converter (common/json-schema-to-
# grammar.cpp), at most twice in a row: an empty array or object is
# "[" space space "]" there
JSON_GAP = re.compile(r'(?: |\n{1,2}[ \t]{0,20})?(?: |\n{1,2}[ \t]{0,20})?')


def check_json_gaps(data):
    """(ok, reason): every run of whitespace outside the strings of a JSON
    text (complete or cut, maybe inside a character) is at most two gaps as
    llama.cpp's grammars bound them: a space, or one or two newlines and at
    most 20 spaces or tabs."""
    try:
        cps, _ = split_utf8(data)
    except ValueError as e:
        return False, str(e)
    text = ''.join(chr(c) for c in cps)
    in_string = escaped = False
    i = 0
    while i < len(text):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == '\\':
                escaped = True
            elif c == '"':
                in_string = False
            i += 1
            continue
        if c == '"':
            in_string = True
            i += 1
            continue
        if c in ' \t\n\r':
            j = i
            while j < len(text) and text[j] in ' \t\n\r':
                j += 1
            if not JSON_GAP.fullmatch(text[i:j]):
                return False, "whitespace %r at code point %d is not one bounded gap" % (text[i:j][:40], i)
            i = j
            continue
        i += 1
    return True, "bounded whitespace"


def check_one(mode, arg, data):
    if mode in ('full', 'prefix'):
        return check_text(load_grammar(arg), data, mode == 'prefix')
    if mode == 'json':
        try:
            parse_json_strict(data)
        except ValueError as e:
            return False, "not JSON: %s" % e
        return True, "JSON"
    if mode == 'jsonws':
        return check_json_gaps(data)
    if mode == 'schema':
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import schema_check
        try:
            doc = parse_json_strict(data)
        except ValueError as e:
            return False, "not JSON: %s" % e
        errors = schema_check.validate(schema_check.load_schema(arg), doc)
        if errors:
            return False, "not valid under %s: %s" % (arg, errors[0])
        return True, "valid"
    raise GrammarError("unknown mode %r" % mode)


def batch(list_path):
    checked = failed = 0
    with open(list_path, encoding='utf-8') as f:
        lines = [line.rstrip('\n') for line in f if line.strip()]
    for line in lines:
        fields = line.split('\t')
        if len(fields) < 3:
            print("FAIL bad line in %s: %r" % (list_path, line))
            checked += 1
            failed += 1
            continue
        mode, arg, path = fields[:3]
        label = fields[3] if len(fields) > 3 else path
        checked += 1
        data = b''
        try:
            with open(path, 'rb') as t:
                data = t.read()
            ok, reason = check_one(mode, arg, data)
        except (GrammarError, OSError, ValueError) as e:
            ok, reason = False, "error: %s" % e
        if not ok:
            failed += 1
            print("FAIL %s [%s %s %s]: %s; text: %r" % (label, mode, arg, path, reason, data[:300]))
    sizes = {}
    for line in lines:
        fields = line.split('\t')
        if len(fields) >= 3 and fields[2] not in sizes and os.path.exists(fields[2]):
            sizes[fields[2]] = os.path.getsize(fields[2])
    print("%d checked (%d texts, %d bytes), %d failed" % (checked, len(sizes), sum(sizes.values()), failed))
    return 1 if failed else 0


# ---------------------------------------------------------------------------
# self-test: per construct, strings that must and must not match
# ---------------------------------------------------------------------------

SELF_TESTS = [
    # (grammar, [(text, mode, expected)])  mode: 'f' full, 'p' prefix
    ('root ::= "abc"', [("abc", 'f', 1), ("ab", 'f', 0), ("abcd", 'f', 0), ("", 'f', 0),
                        ("ab", 'p', 1), ("", 'p', 1), ("abc", 'p', 1), ("abd", 'p', 0), ("abcd", 'p', 0)]),
    # alternatives, sequences, groups
    ('root ::= "a" | "bc" | ("d" "e" | "f")', [("a", 'f', 1), ("bc", 'f', 1), ("de", 'f', 1), ("f", 'f', 1),
                                               ("b", 'f', 0), ("b", 'p', 1), ("d", 'p', 1), ("df", 'p', 0),
                                               ("ab", 'f', 0)]),
    ('root ::= x y\nx ::= "1" | "12"\ny ::= "23" | "3"', [("123", 'f', 1), ("1223", 'f', 1), ("13", 'f', 1), ("14", 'f', 0),
                                                          ("12", 'p', 1), ("1234", 'f', 0)]),
    # empty alternative and empty literal
    ('root ::= "[" ws "]"\nws ::= | " " | "\\n" [ \\t]{0,2}', [("[]", 'f', 1), ("[ ]", 'f', 1), ("[\n\t\t]", 'f', 1),
                                                              ("[\n\t\t\t]", 'f', 0), ("[  ]", 'f', 0), ("[\n", 'p', 1)]),
    ('root ::= "" "a" ""', [("a", 'f', 1), ("", 'f', 0)]),
    # * + ?
    ('root ::= "a"* "b"', [("b", 'f', 1), ("aaab", 'f', 1), ("aaa", 'f', 0), ("aaa", 'p', 1), ("ba", 'f', 0)]),
    ('root ::= "ab"+', [("ab", 'f', 1), ("ababab", 'f', 1), ("", 'f', 0), ("aba", 'f', 0), ("aba", 'p', 1),
                        ("abb", 'p', 0)]),
    ('root ::= "x" "y"? "z"', [("xz", 'f', 1), ("xyz", 'f', 1), ("xyyz", 'f', 0), ("xy", 'p', 1)]),
    # {m} {m,} {m,n} {0,n}
    ('root ::= [0-9]{3}', [("123", 'f', 1), ("12", 'f', 0), ("1234", 'f', 0), ("12", 'p', 1), ("1234", 'p', 0)]),
    ('root ::= "a"{2,}', [("a", 'f', 0), ("aa", 'f', 1), ("aaaaaaa", 'f', 1), ("a", 'p', 1)]),
    ('root ::= "a"{2,4} "b"', [("ab", 'f', 0), ("aab", 'f', 1), ("aaaab", 'f', 1), ("aaaaab", 'f', 0),
                               ("aaaa", 'p', 1), ("aaaaa", 'p', 0)]),
    ('root ::= ("a" | "bb"){0,2} "."', [(".", 'f', 1), ("a.", 'f', 1), ("bba.", 'f', 1), ("abba.", 'f', 0),
                                        ("b", 'p', 1), ("bbb", 'p', 1), ("bbbb", 'p', 1), ("bbbbb", 'p', 0)]),
    ('root ::= ( "x" ){ 1 , 2 }', [("x", 'f', 1), ("xx", 'f', 1), ("xxx", 'f', 0)]),
    # a repeated nullable group ends (no endless loop)
    ('root ::= ("a"?)* "b"', [("b", 'f', 1), ("aab", 'f', 1), ("aa", 'p', 1)]),
    ('root ::= ("a"?){3,} "b"', [("b", 'f', 1), ("aaaab", 'f', 1)]),
    # classes, ranges, negation, escapes
    ('root ::= [a-cx]+', [("abcx", 'f', 1), ("d", 'f', 0), ("ax", 'f', 1), ("-", 'f', 0)]),
    ('root ::= [-+*/]', [("-", 'f', 1), ("+", 'f', 1), ("/", 'f', 1), ("a", 'f', 0)]),
    ('root ::= [a-]', [("a", 'f', 1), ("-", 'f', 1), ("b", 'f', 0)]),
    ('root ::= [^"\\\\\\x7F\\x00-\\x1F]', [("a", 'f', 1), ('"', 'f', 0), ("\\", 'f', 0), ("\x7f", 'f', 0),
                                          ("\x1f", 'f', 0), ("\t", 'f', 0), ("é", 'f', 1), ("\U0001F600", 'f', 1)]),
    ('root ::= [^\\n]+ "\\n"', [("hi\n", 'f', 1), ("h\ni\n", 'f', 0), ("hi", 'p', 1)]),
    ('root ::= [\\[\\]] "\\"" "\\\\" [\\t] "\\r"', [("[\"\\\t\r", 'f', 1), ("]\"\\\t\r", 'f', 1)]),
    ('root ::= "\\x41\\u00e9\\U0001F600"', [("Aé\U0001F600", 'f', 1), ("Ae\U0001F600", 'f', 0)]),
    ('root ::= [ぁ-ゟ]+', [("ひらがな", 'f', 1), ("カ", 'f', 0)]),
    # . : any code point, not only one byte
    ('root ::= "<" . ">"', [("<a>", 'f', 1), ("<é>", 'f', 1), ("<\U0010FFFF>", 'f', 1), ("<>", 'f', 0),
                            ("<ab>", 'f', 0), ("<\n>", 'f', 1)]),
    # UTF-8: a prefix may end inside a character, a sentence may not
    ('root ::= "é!"', [(b"\xc3", 'p', 1), (b"\xc3", 'f', 0), (b"\xc3\xa9", 'p', 1), (b"\xc4", 'p', 0)]),
    ('root ::= [ぁ-ゟ]', [(b"\xe3\x81", 'p', 1), (b"\xe3\x83", 'p', 0), (b"\xe3", 'p', 1), (b"\xe4", 'p', 0)]),
    ('root ::= [^a]', [(b"\xed\xa0", 'p', 0), (b"\xed\x9f", 'p', 1), (b"\xf4\x90", 'p', 0), (b"\xe0\x80", 'p', 0),
                       (b"\xff", 'p', 0), (b"\xed\xa0\x80", 'f', 0), (b"\x80", 'p', 0)]),
    ('root ::= "a" .', [(b"a\xf0\x9f", 'p', 1), (b"a\xf0\x9f\x98", 'p', 1), (b"\xc3\xa9", 'p', 0)]),
    # comments and newlines: after ::=, after |, inside parentheses
    ('# a comment\nroot ::= # after the arrow\n  "a" | # after a bar\n  "b" ( "c"\n  | "d" # inside\n )\n# end',
     [("a", 'f', 1), ("bc", 'f', 1), ("bd", 'f', 1), ("b", 'f', 0)]),
    # recursion (not left): nested brackets
    ('root ::= item\nitem ::= "(" item* ")"', [("()", 'f', 1), ("(()())", 'f', 1), ("(()", 'f', 0), ("(()", 'p', 1),
                                              ("())", 'p', 0)]),
    # rule names: dashes, digits, capitals (c.gbnf)
    ('root ::= my-rule2 dataType\nmy-rule2 ::= "a"\ndataType ::= "B"', [("aB", 'f', 1)]),
    # a longer text (speed and recursion depth): nested JSON-like lists
    ('root ::= v\nv ::= "[" (v ("," v)*)? "]" | [0-9]+', [("[" * 200 + "]" * 200, 'f', 1),
                                                          ("[" * 200 + "]" * 199, 'p', 1),
                                                          ("[1,[2,3],[]]", 'f', 1), ("[1,]", 'p', 0)]),
]

BAD_GRAMMARS = [
    ('root ::= "a', "unterminated string literal"),
    ('root ::= [a', "unterminated character class"),
    ('root ::= "a" )', "expecting newline or end"),
    ('root ::= ("a"', "expecting ')'"),
    ('root ::= x', "undefined rule x"),
    ('rooot ::= "a"', "no root rule"),
    ('root ::= *', "'*' with nothing before it"),
    ('root ::= "a"{3,2}', "max below min"),
    ('root ::= "\\q"', "unknown escape"),
    ('root ::= x\nx ::= "a" x', "can never match"),
    ('root ::= "a"\nroot ::= "b"', "defined twice"),
    ('root ::= "a"\n  "b"', "line 2, column 3"),
    ('root = "a"', "expecting ::="),
]


def self_test():
    n = bad = 0
    for text, want in BAD_GRAMMARS:
        n += 1
        try:
            Grammar(text)
            got = "no error"
        except GrammarError as e:
            got = str(e)
        if want not in got:
            bad += 1
            print("FAIL grammar %r: want an error with %r, got %r" % (text, want, got))
    # left recursion is found while matching
    n += 1
    try:
        check_text(Grammar('root ::= x "a"\nx ::= root | "b"'), b"ba", False)
        bad += 1
        print("FAIL left recursion not reported")
    except GrammarError as e:
        if "left recursion" not in str(e):
            bad += 1
            print("FAIL left recursion: %s" % e)
    for gtext, cases in SELF_TESTS:
        g = Grammar(gtext)
        for text, mode, want in cases:
            n += 1
            data = text if isinstance(text, bytes) else text.encode('utf-8')
            ok, reason = check_text(g, data, mode == 'p')
            if ok != bool(want):
                bad += 1
                print("FAIL %r on %r (%s): got %s (%s)" % (gtext, data, 'prefix' if mode == 'p' else 'full', ok, reason))
    for text, want in [('{"a": 1}', 1), ('{\n\n\t"a" :\n  1 }', 1), ('{"a  b": 1}', 1), ('{\n\n\n"a": 1}', 1), ('{\n\n\n\n\n"a": 1}', 0),
                       ('{   "a": 1}', 0), ('[1,\n' + ' ' * 20 + '2]', 1), ('[1,\n' + ' ' * 21 + '2]', 1), ('[1,\n' + ' ' * 22 + '2]', 0), ('[ \n\n' + ' ' * 20 + ']', 1),
                       ('[ \n\n' + ' ' * 20 + ' ]', 0), ('[\n\n\t\n\t]', 1), ('[\n \n \n]', 0), (b'["\xe6\x97', 1),
                       ('{"a\\"  ": 1}', 1), ('{"a":\n', 1), ('{"a":\n\t\t', 1), ('{"a": \n', 1), ('{\r\n}', 0), ('{ \n \n}', 0)]:
        n += 1
        ok, reason = check_json_gaps(text if isinstance(text, bytes) else text.encode('utf-8'))
        if ok != bool(want):
            bad += 1
            print("FAIL JSON gaps on %r: got %s (%s)" % (text, ok, reason))
    # the example grammars of llama.cpp, when they are beside this file
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'grammars')
    examples = {
        'json.gbnf': [('{"a": [1, -2.5e+3, true, null, "x\\u00e9\\n"], "b": {}}', 'f', 1), ('{}', 'f', 1),
                      ('{"a":01}', 'f', 0), ('{"a": "\x01"}', 'f', 0), ('[1]', 'f', 0), ('{"a": [1, 2', 'p', 1),
                      ('{"a" 1', 'p', 0), ('{\n  "k": 1}', 'f', 1), ('{ \n "k": 1}', 'f', 0), ('{"a":NaN}', 'p', 0)],
        'arithmetic.gbnf': [("1+2=3\n", 'f', 1), ("(a *b)=c\n", 'f', 1), ("(a * b)=c\n", 'f', 0), ("1+2=", 'p', 1), ("1+=2\n", 'f', 0),
                            ("x = y\nz=1\n", 'f', 1)],
        'list.gbnf': [("- a\n- bc\n", 'f', 1), ("- a\n-", 'p', 1), ("- \n", 'f', 0), ("- a\u2028b\n", 'f', 0),
                      ("* a\n", 'p', 0)],
        'c.gbnf': [("int main(){return 0;}", 'f', 1), ("int f(int x){x = x+1;while(x<3){x = x*2;}}", 'f', 1),
                   ("int main(", 'p', 1), ("int main)", 'p', 0), ("", 'f', 1)],
        'chess.gbnf': [("1. e4 e5\n2. Nf3 Nc6\n", 'f', 1), ("1. e4 e5\n", 'f', 0), ("1. e4 e5\n2. O-O", 'p', 1),
                       ("1. e9", 'p', 0), ("1. exd5 Qxd5+\n10. O-O-O a8=Q#\n", 'f', 1)],
        'japanese.gbnf': [("こんにちは", 'f', 1), ("日本 語", 'f', 1), ("abc", 'f', 0), ("日本 ", 'p', 1),
                          ("日本 ", 'f', 0)],
    }
    found = 0
    for name, cases in examples.items():
        path = os.path.join(here, name)
        if not os.path.exists(path):
            continue
        found += 1
        g = load_grammar(path)
        for text, mode, want in cases:
            n += 1
            ok, reason = check_text(g, text.encode('utf-8'), mode == 'p')
            if ok != bool(want):
                bad += 1
                print("FAIL %s on %r (%s): got %s (%s)" % (name, text, 'prefix' if mode == 'p' else 'full', ok, reason))
        # random sentences: each matches in full, byte prefixes of it as prefixes
        import random
        rng = random.Random(1234)
        gen = Generator(g, rng)
        for _ in range(12):
            data = gen.sentence()[:300]
            cases = [(data, False)] if len(data) < 300 else []
            cuts = set(rng.sample(range(len(data) + 1), min(len(data) + 1, 12)))
            cases += [(data[:k], True) for k in sorted(cuts)]
            for text, prefix in cases:
                n += 1
                ok, reason = check_text(g, text, prefix)
                if not ok:
                    bad += 1
                    print("FAIL %s on generated %r (%s): %s" % (name, text, 'prefix' if prefix else 'full', reason))
    print("grammar_check self-test: %d cases (%d example grammars), %d failed" % (n, found, bad))
    return 1 if bad else 0


def main(argv):
    if len(argv) >= 1 and argv[0] == '--self-test':
        return self_test()
    if len(argv) == 2 and argv[0] == '--batch':
        return batch(argv[1])
    args = [a for a in argv if a != '--prefix']
    if len(args) != 1:
        sys.stderr.write(__doc__)
        return 2
    try:
        g = load_grammar(args[0])
    except (GrammarError, OSError, UnicodeDecodeError) as e:
        sys.stderr.write("grammar_check: %s: %s\n" % (args[0], e))
        return 2
    data = sys.stdin.buffer.read()
    try:
        ok, reason = check_text(g, data, '--prefix' in argv)
    except GrammarError as e:
        ok, reason = False, str(e)
    sys.stderr.write("grammar_check: %s\n" % reason)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
