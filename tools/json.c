/* json.c - the JSON reader of slm-convert (config.json, tokenizer.json,
   tokenizer_config.json, safetensors headers) and of the tests (the
   reference outputs). See json.h. */
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void json_free(json_doc *d) {
    free(d->n);
    free(d->arena);
    d->n = NULL;
    d->arena = NULL;
}

static int json_error(json_doc *d, const char *msg) {
    snprintf(d->error, sizeof d->error, "%s: invalid JSON at byte %llu: %s", d->what, (unsigned long long)d->pos, msg);
    return -1;
}

static void json_ws(json_doc *d) {
    while (d->pos < d->len &&
           (d->src[d->pos] == ' ' || d->src[d->pos] == '\t' || d->src[d->pos] == '\n' || d->src[d->pos] == '\r'))
        d->pos++;
}

static int32_t json_new_node(json_doc *d, int type) {
    json_node *x;
    if (d->count == d->cap) {
        uint32_t cap = d->cap ? d->cap * 2 : 256;
        json_node *nn;
        size_t bytes = (size_t)cap * sizeof(json_node);
        if (cap < d->cap || cap > (uint32_t)INT32_MAX || bytes / sizeof(json_node) != cap) {
            json_error(d, "too many values");
            return -1;
        }
        nn = (json_node *)realloc(d->n, bytes);
        if (!nn) {
            snprintf(d->error, sizeof d->error, "out of memory parsing %s", d->what);
            return -1;
        }
        d->n = nn;
        d->cap = cap;
    }
    x = &d->n[d->count];
    memset(x, 0, sizeof *x);
    x->type = type;
    x->first = x->next = -1;
    return (int32_t)d->count++;
}

static int json_hex4(json_doc *d, uint32_t *out) {
    int i;
    uint32_t v = 0;
    if (d->len - d->pos < 4) return json_error(d, "truncated \\u escape");
    for (i = 0; i < 4; i++) {
        char c = d->src[d->pos + (size_t)i];
        int h = (c >= '0' && c <= '9')   ? c - '0'
                : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                         : -1;
        if (h < 0) return json_error(d, "bad hex digit in a \\u escape");
        v = v * 16 + (uint32_t)h;
    }
    d->pos += 4;
    *out = v;
    return 0;
}

/* Decodes the string at d->pos (on its opening quote) into the arena. */
static int json_string(json_doc *d, const char **out, uint32_t *out_len) {
    char *o = d->arena + d->arena_used, *start = o;
    d->pos++; /* opening quote */
    for (;;) {
        unsigned char c;
        if (d->pos >= d->len) return json_error(d, "unterminated string");
        c = (unsigned char)d->src[d->pos];
        if (c == '"') {
            d->pos++;
            break;
        }
        if (c < 0x20) return json_error(d, "control character inside a string");
        if (c != '\\') {
            *o++ = (char)c;
            d->pos++;
            continue;
        }
        if (++d->pos >= d->len) return json_error(d, "unterminated escape");
        c = (unsigned char)d->src[d->pos++];
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            if (json_hex4(d, &cp)) return -1;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return json_error(d, "lone low surrogate in a \\u escape");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (d->len - d->pos < 2 || d->src[d->pos] != '\\' || d->src[d->pos + 1] != 'u')
                    return json_error(d, "high surrogate not followed by a low surrogate");
                d->pos += 2;
                if (json_hex4(d, &lo)) return -1;
                if (lo < 0xDC00 || lo > 0xDFFF) return json_error(d, "high surrogate not followed by a low surrogate");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp < 0x80)
                *o++ = (char)cp;
            else if (cp < 0x800) {
                *o++ = (char)(0xC0 | (cp >> 6));
                *o++ = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                *o++ = (char)(0xE0 | (cp >> 12));
                *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                *o++ = (char)(0x80 | (cp & 0x3F));
            } else {
                *o++ = (char)(0xF0 | (cp >> 18));
                *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
                *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                *o++ = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default: d->pos--; return json_error(d, "unknown escape");
        }
    }
    *o++ = 0;
    if ((size_t)(o - start - 1) > UINT32_MAX) return json_error(d, "string longer than 4 GB");
    *out = start;
    *out_len = (uint32_t)(o - start - 1);
    d->arena_used += (size_t)(o - start);
    return 0;
}

static int json_number(json_doc *d, json_node *x) {
    size_t s = d->pos, n;
    char tmp[128];
    int overflow = 0;
    uint64_t u = 0;
    if (d->src[d->pos] == '-') d->pos++;
    if (d->pos >= d->len || d->src[d->pos] < '0' || d->src[d->pos] > '9') return json_error(d, "bad number");
    if (d->src[d->pos] == '0')
        d->pos++;
    else
        while (d->pos < d->len && d->src[d->pos] >= '0' && d->src[d->pos] <= '9') {
            unsigned dig = (unsigned)(d->src[d->pos] - '0');
            if (u > (UINT64_MAX - dig) / 10)
                overflow = 1;
            else
                u = u * 10 + dig;
            d->pos++;
        }
    x->is_uint = d->src[s] != '-' && !overflow;
    if (d->pos < d->len && d->src[d->pos] == '.') {
        d->pos++;
        x->is_uint = 0;
        if (d->pos >= d->len || d->src[d->pos] < '0' || d->src[d->pos] > '9')
            return json_error(d, "bad number: no digit after '.'");
        while (d->pos < d->len && d->src[d->pos] >= '0' && d->src[d->pos] <= '9') d->pos++;
    }
    if (d->pos < d->len && (d->src[d->pos] == 'e' || d->src[d->pos] == 'E')) {
        d->pos++;
        x->is_uint = 0;
        if (d->pos < d->len && (d->src[d->pos] == '+' || d->src[d->pos] == '-')) d->pos++;
        if (d->pos >= d->len || d->src[d->pos] < '0' || d->src[d->pos] > '9')
            return json_error(d, "bad number: no digit in the exponent");
        while (d->pos < d->len && d->src[d->pos] >= '0' && d->src[d->pos] <= '9') d->pos++;
    }
    n = d->pos - s;
    if (n >= sizeof tmp) n = sizeof tmp - 1; /* long mantissas: strtod of the first 127 chars is close enough */
    memcpy(tmp, d->src + s, n);
    tmp[n] = 0;
    x->num = strtod(tmp, NULL);
    x->u = u;
    if (x->is_uint) x->num = (double)u;
    return 0;
}

static int32_t json_value(json_doc *d, int depth) {
    int32_t id, last = -1;
    char c;
    json_ws(d);
    if (d->pos >= d->len) {
        json_error(d, "unexpected end of input");
        return -1;
    }
    c = d->src[d->pos];
    if (c == '{' || c == '[') {
        int obj = c == '{';
        char close = obj ? '}' : ']';
        if (depth >= JSON_MAX_DEPTH) {
            json_error(d, "nested deeper than 64 levels");
            return -1;
        }
        id = json_new_node(d, obj ? JSON_OBJ : JSON_ARR);
        if (id < 0) return -1;
        d->pos++;
        json_ws(d);
        if (d->pos < d->len && d->src[d->pos] == close) {
            d->pos++;
            return id;
        }
        for (;;) {
            const char *key = NULL;
            uint32_t key_len = 0;
            int32_t child;
            if (obj) {
                json_ws(d);
                if (d->pos >= d->len || d->src[d->pos] != '"') {
                    json_error(d, "expected a string key");
                    return -1;
                }
                if (json_string(d, &key, &key_len)) return -1;
                json_ws(d);
                if (d->pos >= d->len || d->src[d->pos] != ':') {
                    json_error(d, "expected ':' after a key");
                    return -1;
                }
                d->pos++;
            }
            child = json_value(d, depth + 1);
            if (child < 0) return -1;
            d->n[child].key = key;
            d->n[child].key_len = key_len;
            if (last < 0)
                d->n[id].first = child;
            else
                d->n[last].next = child;
            last = child;
            d->n[id].len++;
            json_ws(d);
            if (d->pos >= d->len) {
                json_error(d, obj ? "unterminated object" : "unterminated array");
                return -1;
            }
            if (d->src[d->pos] == ',') {
                d->pos++;
                continue;
            }
            if (d->src[d->pos] == close) {
                d->pos++;
                return id;
            }
            json_error(d, obj ? "expected ',' or '}'" : "expected ',' or ']'");
            return -1;
        }
    }
    if (c == '"') {
        const char *s;
        uint32_t n;
        if (json_string(d, &s, &n)) return -1;
        id = json_new_node(d, JSON_STR);
        if (id < 0) return -1;
        d->n[id].s = s;
        d->n[id].len = n;
        return id;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        json_node tmp;
        memset(&tmp, 0, sizeof tmp);
        if (json_number(d, &tmp)) return -1;
        id = json_new_node(d, JSON_NUM);
        if (id < 0) return -1;
        d->n[id].num = tmp.num;
        d->n[id].is_uint = tmp.is_uint;
        d->n[id].u = tmp.u;
        return id;
    }
    {
        static const struct {
            const char *word;
            int type;
        } lit[3] = { { "true", JSON_TRUE }, { "false", JSON_FALSE }, { "null", JSON_NULL } };
        int k;
        for (k = 0; k < 3; k++) {
            size_t n = strlen(lit[k].word);
            if (d->len - d->pos >= n && memcmp(d->src + d->pos, lit[k].word, n) == 0) {
                d->pos += n;
                return json_new_node(d, lit[k].type);
            }
        }
    }
    json_error(d, "unexpected character");
    return -1;
}

int json_parse(json_doc *d, const char *src, size_t len, const char *what) {
    memset(d, 0, sizeof *d);
    d->src = src;
    d->len = len;
    d->what = what;
    if (len >= 3 && memcmp(src, "\xEF\xBB\xBF", 3) == 0) d->pos = 3;
    d->arena = (char *)malloc(len + 1);
    if (!d->arena) {
        snprintf(d->error, sizeof d->error, "out of memory parsing %s", what);
        return -1;
    }
    if (json_value(d, 0) != 0) {
        json_free(d);
        return -1;
    }
    json_ws(d);
    if (d->pos != d->len) {
        json_error(d, "unexpected data after the JSON value");
        json_free(d);
        return -1;
    }
    return 0;
}

const json_node *json_root(const json_doc *d) { return &d->n[0]; }
const json_node *json_first(const json_doc *d, const json_node *x) {
    return x && x->first >= 0 ? &d->n[x->first] : NULL;
}
const json_node *json_next(const json_doc *d, const json_node *x) { return x->next >= 0 ? &d->n[x->next] : NULL; }

/* Member `key` of an object (NULL when x is not an object or lacks it). */
const json_node *json_get(const json_doc *d, const json_node *x, const char *key) {
    const json_node *c;
    if (!x || x->type != JSON_OBJ) return NULL;
    for (c = json_first(d, x); c; c = json_next(d, c))
        if (strcmp(c->key, key) == 0) return c;
    return NULL;
}

const char *json_str(const json_node *x) { return x && x->type == JSON_STR ? x->s : NULL; }
int json_is_true(const json_node *x) { return x && x->type == JSON_TRUE; }

const json_node *json_at(const json_doc *d, const json_node *x, uint32_t i) {
    const json_node *c;
    if (!x || (x->type != JSON_ARR && x->type != JSON_OBJ) || i >= x->len) return NULL;
    for (c = json_first(d, x); i > 0; i--) c = json_next(d, c);
    return c;
}

double json_num(const json_node *x, double dflt) { return x && x->type == JSON_NUM ? x->num : dflt; }
