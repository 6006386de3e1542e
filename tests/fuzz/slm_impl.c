/* slm_impl.c - slm.h's implementation for the fuzz targets, with the slm__
   helpers the converter's files use (SLM_INTERNAL, as tools/slm-convert.c).
   fuzz_chat.c holds its own copy: it calls static internals. */
#define SLM_IMPLEMENTATION
#include "../../tools/convert.h"
