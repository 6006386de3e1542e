/* tests/simde_avx512.h - runs slm.h's AVX-512 kernels on a machine without
   AVX-512: SIMDe (SIMD Everywhere, libsimde-dev) supplies the _mm512_*
   intrinsics in portable C, and the macros below make slm.h select its
   AVX-512 path exactly as a -mavx512f -mavx512bw -mavx512vl build would.
   Test builds only, force-included ahead of everything else:

     cc -O2 -mavx2 -mfma -mf16c -include tests/simde_avx512.h [-DSLM_TEST_VNNI] ...

   slm.h itself is unchanged: it sees the predefined macros it would see on
   AVX-512 hardware. The 256- and 128-bit intrinsics stay the compiler's own
   (native AVX2); the 512-bit and mask ones are SIMDe's, or the few plain C
   ones below. One that neither supplies stays the compiler's, and gcc and
   clang refuse to build it without -mavx512f: a build that succeeds executes
   no AVX-512 instruction. slm.h has no AVX512-BF16 path (bf16 weights are
   widened with shifts), so there is no BF16 variant. */
#ifndef SLM_TEST_SIMDE_AVX512_H
#define SLM_TEST_SIMDE_AVX512_H

#if !defined(__AVX2__) || !defined(__FMA__) || !defined(__F16C__)
#error "tests/simde_avx512.h: build with -mavx2 -mfma -mf16c"
#endif
#if defined(__AVX512F__)
#error "tests/simde_avx512.h emulates AVX-512: build without -mavx512* (and without -march=native on an AVX-512 host)"
#endif

/* the compiler's own header first, while it still sees no AVX-512 macro (gcc
   would otherwise compile its AVX-512 intrinsics without the target option);
   SIMDe's aliases below then replace them */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>

/* SIMDe 0.7.4's alias takes the four arguments of the masked form */
#undef _mm512_madd_epi16
#define _mm512_madd_epi16(a, b) simde_mm512_madd_epi16(a, b)

/* What slm.h uses and SIMDe 0.7.4 lacks, in plain C; a SIMDe that has one
   defines its alias, and then that is used. Masked loads read the selected
   elements only, as the instructions do (no fault past the end). */
#ifndef _mm512_cvtepi32_ps
static inline simde__m512 slm_test_mm512_cvtepi32_ps(simde__m512i a) {
    int32_t i32[16];
    float f[16];
    int i;
    simde_mm512_storeu_si512(i32, a);
    for (i = 0; i < 16; i++) f[i] = (float)i32[i];
    return simde_mm512_loadu_ps(f);
}
#define _mm512_cvtepi32_ps(a) slm_test_mm512_cvtepi32_ps(a)
#endif
#ifndef _mm512_cvtepu8_epi32
static inline simde__m512i slm_test_mm512_cvtepu8_epi32(__m128i a) {
    uint8_t u8[16];
    int32_t i32[16];
    int i;
    _mm_storeu_si128((__m128i *)u8, a);
    for (i = 0; i < 16; i++) i32[i] = u8[i];
    return simde_mm512_loadu_si512(i32);
}
#define _mm512_cvtepu8_epi32(a) slm_test_mm512_cvtepu8_epi32(a)
#endif
#ifndef _mm512_cvtepi8_epi32
static inline simde__m512i slm_test_mm512_cvtepi8_epi32(__m128i a) {
    int8_t i8[16];
    int32_t i32[16];
    int i;
    _mm_storeu_si128((__m128i *)i8, a);
    for (i = 0; i < 16; i++) i32[i] = i8[i];
    return simde_mm512_loadu_si512(i32);
}
#define _mm512_cvtepi8_epi32(a) slm_test_mm512_cvtepi8_epi32(a)
#endif
#undef _mm512_shuffle_i64x2
static inline simde__m512i slm_test_mm512_shuffle_i64x2(simde__m512i a, simde__m512i b, int imm) {
    int64_t x[8], y[8], r[8];
    int l;
    simde_mm512_storeu_si512(x, a);
    simde_mm512_storeu_si512(y, b);
    for (l = 0; l < 4; l++) { /* 128-bit lanes: two from a, two from b */
        const int64_t *src = l < 2 ? x : y;
        int sel = (imm >> (2 * l)) & 3;
        r[2 * l] = src[2 * sel];
        r[2 * l + 1] = src[2 * sel + 1];
    }
    return simde_mm512_loadu_si512(r);
}
#define _mm512_shuffle_i64x2(a, b, imm) slm_test_mm512_shuffle_i64x2(a, b, imm)
#ifndef _mm512_shuffle_f32x4
/* 128-bit lanes: two from a, two from b (SIMDe 0.7.4 has no alias for it) */
#define _mm512_shuffle_f32x4(a, b, imm) \
    simde_mm512_castsi512_ps(           \
        slm_test_mm512_shuffle_i64x2(simde_mm512_castps_si512(a), simde_mm512_castps_si512(b), imm))
#endif
#ifndef _mm512_cvtepu16_epi32
static inline simde__m512i slm_test_mm512_cvtepu16_epi32(simde__m256i a) {
    uint16_t u16[16];
    int32_t i32[16];
    int i;
    simde_mm256_storeu_si256(u16, a);
    for (i = 0; i < 16; i++) i32[i] = u16[i];
    return simde_mm512_loadu_si512(i32);
}
#define _mm512_cvtepu16_epi32(a) slm_test_mm512_cvtepu16_epi32(a)
#endif
#ifndef _mm512_cvtepi32_epi16
static inline __m256i slm_test_mm512_cvtepi32_epi16(simde__m512i a) { /* truncates, as vpmovdw */
    int32_t i32[16];
    int16_t i16[16];
    int i;
    simde_mm512_storeu_si512(i32, a);
    for (i = 0; i < 16; i++) i16[i] = (int16_t)(uint16_t)((uint32_t)i32[i] & 0xffffu);
    return _mm256_loadu_si256((const __m256i *)i16);
}
#define _mm512_cvtepi32_epi16(a) slm_test_mm512_cvtepi32_epi16(a)
#endif
#ifndef _mm512_cvtph_ps
/* with the build's own F16C, 8 at a time */
static inline simde__m512 slm_test_mm512_cvtph_ps(simde__m256i a) {
    uint16_t h[16];
    float f[16];
    simde_mm256_storeu_si256(h, a);
    _mm256_storeu_ps(f, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h)));
    _mm256_storeu_ps(f + 8, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + 8))));
    return simde_mm512_loadu_ps(f);
}
#define _mm512_cvtph_ps(a) slm_test_mm512_cvtph_ps(a)
#endif
#ifndef _mm512_maskz_loadu_ps
static inline simde__m512 slm_test_mm512_maskz_loadu_ps(simde__mmask16 k, const void *p) {
    float f[16];
    int i;
    for (i = 0; i < 16; i++) f[i] = (k >> i) & 1 ? ((const float *)p)[i] : 0.0f;
    return simde_mm512_loadu_ps(f);
}
#define _mm512_maskz_loadu_ps(k, p) slm_test_mm512_maskz_loadu_ps(k, p)
#endif
#ifndef _mm512_mask_storeu_ps
static inline void slm_test_mm512_mask_storeu_ps(void *p, simde__mmask16 k, simde__m512 a) {
    float f[16];
    int i;
    simde_mm512_storeu_ps(f, a);
    for (i = 0; i < 16; i++)
        if ((k >> i) & 1) ((float *)p)[i] = f[i];
}
#define _mm512_mask_storeu_ps(p, k, a) slm_test_mm512_mask_storeu_ps(p, k, a)
#endif
#ifndef _mm256_maskz_loadu_epi16
static inline simde__m256i slm_test_mm256_maskz_loadu_epi16(simde__mmask16 k, const void *p) {
    int16_t v[16];
    int i;
    for (i = 0; i < 16; i++) v[i] = (k >> i) & 1 ? ((const int16_t *)p)[i] : 0;
    return simde_mm256_loadu_si256(v);
}
#define _mm256_maskz_loadu_epi16(k, p) slm_test_mm256_maskz_loadu_epi16(k, p)
#endif
#ifndef _mm512_cvtps_epi32
/* to nearest, ties to even (the default rounding); NaN and out of range give
   INT32_MIN, as the instruction does */
static inline simde__m512i slm_test_mm512_cvtps_epi32(simde__m512 a) {
    float f[16];
    int32_t r[16];
    int i;
    simde_mm512_storeu_ps(f, a);
    for (i = 0; i < 16; i++)
        r[i] = f[i] >= -2147483648.0f && f[i] < 2147483648.0f ? (int32_t)nearbyintf(f[i]) : INT32_MIN;
    return simde_mm512_loadu_si512(r);
}
#define _mm512_cvtps_epi32(a) slm_test_mm512_cvtps_epi32(a)
#endif
#ifndef _mm512_srai_epi32
/* counts above 31 fill with the sign bit */
static inline simde__m512i slm_test_mm512_srai_epi32(simde__m512i a, unsigned count) {
    int32_t v[16];
    int i;
    simde_mm512_storeu_si512(v, a);
    for (i = 0; i < 16; i++)
        v[i] = v[i] < 0 ? ~(~v[i] >> (count > 31 ? 31 : count)) : v[i] >> (count > 31 ? 31 : count);
    return simde_mm512_loadu_si512(v);
}
#define _mm512_srai_epi32(a, count) slm_test_mm512_srai_epi32(a, count)
#endif
#ifndef _mm512_mask_loadu_ps
static inline simde__m512 slm_test_mm512_mask_loadu_ps(simde__m512 src, simde__mmask16 k, const void *p) {
    float f[16];
    int i;
    simde_mm512_storeu_ps(f, src);
    for (i = 0; i < 16; i++)
        if ((k >> i) & 1) f[i] = ((const float *)p)[i];
    return simde_mm512_loadu_ps(f);
}
#define _mm512_mask_loadu_ps(src, k, p) slm_test_mm512_mask_loadu_ps(src, k, p)
#endif
#ifndef _mm512_reduce_max_ps
/* the order of gcc's header, each step maxps(x, y) = x > y ? x : y */
static inline float slm_test_maxps(float x, float y) { return x > y ? x : y; }
static inline float slm_test_mm512_reduce_max_ps(simde__m512 a) {
    float v[16], h[8], q[4], e[4];
    int i;
    simde_mm512_storeu_ps(v, a);
    for (i = 0; i < 8; i++) h[i] = slm_test_maxps(v[8 + i], v[i]);
    for (i = 0; i < 4; i++) q[i] = slm_test_maxps(h[4 + i], h[i]);
    for (i = 0; i < 4; i++) e[i] = slm_test_maxps(q[i], q[i ^ 2]);
    return slm_test_maxps(e[0], e[1]);
}
#define _mm512_reduce_max_ps(a) slm_test_mm512_reduce_max_ps(a)
#endif
#ifndef _mm512_mask3_fmadd_ps
/* a * b + c rounded once where k is set, c elsewhere */
static inline simde__m512 slm_test_mm512_mask3_fmadd_ps(simde__m512 a, simde__m512 b, simde__m512 c, simde__mmask16 k) {
    float fa[16], fb[16], fc[16];
    int i;
    simde_mm512_storeu_ps(fa, a);
    simde_mm512_storeu_ps(fb, b);
    simde_mm512_storeu_ps(fc, c);
    for (i = 0; i < 16; i++)
        if ((k >> i) & 1) fc[i] = fmaf(fa[i], fb[i], fc[i]);
    return simde_mm512_loadu_ps(fc);
}
#define _mm512_mask3_fmadd_ps(a, b, c, k) slm_test_mm512_mask3_fmadd_ps(a, b, c, k)
#endif
#ifndef _mm512_reduce_add_ps
/* the order of gcc's header: halves of 256, of 128, then pairs */
static inline float slm_test_mm512_reduce_add_ps(simde__m512 a) {
    float v[16], h[8], q[4];
    int i;
    simde_mm512_storeu_ps(v, a);
    for (i = 0; i < 8; i++) h[i] = v[8 + i] + v[i];
    for (i = 0; i < 4; i++) q[i] = h[4 + i] + h[i];
    return (q[0] + q[2]) + (q[1] + q[3]);
}
#define _mm512_reduce_add_ps(a) slm_test_mm512_reduce_add_ps(a)
#endif

#ifndef _mm512_reduce_add_epi32
static inline int slm_test_mm512_reduce_add_epi32(simde__m512i a) { /* wraps, as the instruction */
    int32_t v[16];
    uint32_t sum = 0;
    int i;
    simde_mm512_storeu_si512(v, a);
    for (i = 0; i < 16; i++) sum += (uint32_t)v[i];
    return (int)sum;
}
#define _mm512_reduce_add_epi32(a) slm_test_mm512_reduce_add_epi32(a)
#endif
#ifndef _mm512_cvtepi32_epi8
static inline __m128i slm_test_mm512_cvtepi32_epi8(simde__m512i a) { /* truncates, as vpmovdb */
    int32_t i32[16];
    int8_t i8[16];
    int i;
    simde_mm512_storeu_si512(i32, a);
    for (i = 0; i < 16; i++) i8[i] = (int8_t)(uint8_t)((uint32_t)i32[i] & 0xffu);
    return _mm_loadu_si128((const __m128i *)i8);
}
#define _mm512_cvtepi32_epi8(a) slm_test_mm512_cvtepi32_epi8(a)
#endif
#ifndef _mm512_mask_cmp_ps_mask
/* the one predicate slm.h uses with a mask: _CMP_UNORD_Q (either is NaN) */
static inline simde__mmask16 slm_test_mm512_mask_cmp_unord_ps(simde__mmask16 k, simde__m512 a, simde__m512 b) {
    float fa[16], fb[16];
    simde__mmask16 r = 0;
    int i;
    simde_mm512_storeu_ps(fa, a);
    simde_mm512_storeu_ps(fb, b);
    for (i = 0; i < 16; i++)
        if (((k >> i) & 1) && (isnan(fa[i]) || isnan(fb[i]))) r |= (simde__mmask16)(1u << i);
    return r;
}
#define _mm512_mask_cmp_ps_mask(k, a, b, p) slm_test_mm512_mask_cmp_unord_ps(k, a, b)
#endif
#ifndef _mm512_cvtps_ph
/* with the build's own F16C, 8 at a time */
static inline __m256i slm_test_mm512_cvtps_ph(simde__m512 a) {
    float f[16];
    simde_mm512_storeu_ps(f, a);
    return _mm256_setr_m128i(_mm256_cvtps_ph(_mm256_loadu_ps(f), _MM_FROUND_TO_NEAREST_INT),
                             _mm256_cvtps_ph(_mm256_loadu_ps(f + 8), _MM_FROUND_TO_NEAREST_INT));
}
#define _mm512_cvtps_ph(a, r) slm_test_mm512_cvtps_ph(a)
#endif
#ifndef _mm256_mask_storeu_epi16
static inline void slm_test_mm256_mask_storeu_epi16(void *p, simde__mmask16 k, __m256i a) {
    uint16_t h[16];
    int i;
    _mm256_storeu_si256((__m256i *)h, a);
    for (i = 0; i < 16; i++)
        if ((k >> i) & 1) ((uint16_t *)p)[i] = h[i];
}
#define _mm256_mask_storeu_epi16(p, k, a) slm_test_mm256_mask_storeu_epi16(p, k, a)
#endif
#define __AVX512F__  1
#define __AVX512BW__ 1
#define __AVX512VL__ 1
#if defined(SLM_TEST_VNNI)
#define __AVX512VNNI__ 1
#endif

#endif
