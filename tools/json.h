/* json.h - a small DOM reader for RFC 8259 text, shared by slm-convert and
   the tests.

   Every value becomes a node in one growing array; arrays and objects link
   their children through `first` / `next` indices. Strings are decoded (all
   escapes, \uXXXX surrogate pairs -> UTF-8) into one arena the size of the
   input, which always suffices because a decoded string plus its NUL is
   never longer than its quoted source. Nesting is limited to JSON_MAX_DEPTH;
   a failed parse leaves a message naming the byte offset in doc.error and
   prints nothing. */
#ifndef SLM_JSON_H
#define SLM_JSON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { JSON_NULL, JSON_FALSE, JSON_TRUE, JSON_NUM, JSON_STR, JSON_ARR, JSON_OBJ };
#define JSON_MAX_DEPTH 64
#define JSON_ERROR_MAX 4096 /* a message naming the file (a path) */

typedef struct json_node {
    int type;
    uint32_t len;    /* JSON_STR: bytes; JSON_ARR / JSON_OBJ: children */
    const char *s;   /* JSON_STR: decoded text, NUL-terminated */
    const char *key; /* member of an object: its key, NUL-terminated */
    uint32_t key_len;
    double num;          /* JSON_NUM */
    int is_uint;         /* JSON_NUM: a non-negative integer that fits u64 ... */
    uint64_t u;          /* ... with this exact value */
    int32_t first, next; /* first child, next sibling; -1 = none */
} json_node;

typedef struct json_doc {
    json_node *n;
    uint32_t count, cap;
    char *arena;
    size_t arena_used;
    const char *src;
    size_t len, pos;
    const char *what;           /* the file, for messages */
    char error[JSON_ERROR_MAX]; /* why json_parse failed */
} json_doc;

/* Parses src[0..len) (a leading UTF-8 BOM is skipped); the root is node 0.
   0, or -1 with d->error set and nothing left to free. `what` names the input
   in messages and must outlive d. */
int json_parse(json_doc *d, const char *src, size_t len, const char *what);
void json_free(json_doc *d);

const json_node *json_root(const json_doc *d);
const json_node *json_first(const json_doc *d, const json_node *x);          /* first child, or NULL */
const json_node *json_next(const json_doc *d, const json_node *x);           /* next sibling, or NULL */
const json_node *json_at(const json_doc *d, const json_node *x, uint32_t i); /* child i, or NULL */
/* Member `key` of an object (NULL when x is not an object or lacks it). */
const json_node *json_get(const json_doc *d, const json_node *x, const char *key);
const char *json_str(const json_node *x); /* the text of a string, else NULL */
int json_is_true(const json_node *x);
double json_num(const json_node *x, double dflt); /* a number's value, else dflt */

#ifdef __cplusplus
}
#endif
#endif /* SLM_JSON_H */
