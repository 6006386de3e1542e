/* membw - memory read bandwidth, the ceiling of a memory-bound decode step,
   and with --int8 the other ceiling: int8 multiply-adds per second on one
   thread, with the instruction sequences slm's q8_0 and q4_0 kernels use.

   Sums a buffer (default 1 GiB, far larger than any cache) with the widest
   vector loads the compiler targets (AVX-512, AVX2, NEON, else plain C), split
   in contiguous slices over T threads (OpenMP), PASSES times after one
   warm-up pass; prints the median and range in GB/s (10^9 bytes/s).

       cc -O3 -march=native -fopenmp -o membw bench/membw.c
       ./membw [-t THREADS] [-s MIB] [-r PASSES]
   stdout: {"threads": T, "bytes": N, "passes": P, "gbs_median": X, "gbs_min": X, "gbs_max": X}
       ./membw --int8
   stdout: {"isa": "avx2", "q8_0_gmacs": X, "q4_0_gmacs": X} (medians of 5 runs)

   The int8 loops keep everything in registers (no loads, no nibble
   unpacking, eight independent accumulators), so a kernel cannot beat them:
   AVX2 q8_0 = sign, maddubs, madd (by ones), add per 32 multiply-adds, as
   GGML and slm do without VNNI; q4_0 = maddubs and a 16-bit add (slm sums a
   block's nibble products in int16); AVX-512 VNNI, AVX-VNNI and NEON dot
   product: one dpbusd / dpbusd / sdot per 64 / 32 / 16 multiply-adds for both.
*/
#if !defined(_WIN32) && !defined(__APPLE__) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#elif defined(__ARM_NEON)
#include <arm_neon.h>
#endif

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Sum of n bytes (n a multiple of 256) as 64-bit lanes; four independent
   accumulators so the adds never limit the loads. */
static uint64_t sum_slice(const uint8_t *p, size_t n) {
    size_t i;
#if defined(__AVX512F__)
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    for (i = 0; i < n; i += 256) {
        a0 = _mm512_add_epi64(a0, _mm512_load_si512((const void *)(p + i)));
        a1 = _mm512_add_epi64(a1, _mm512_load_si512((const void *)(p + i + 64)));
        a2 = _mm512_add_epi64(a2, _mm512_load_si512((const void *)(p + i + 128)));
        a3 = _mm512_add_epi64(a3, _mm512_load_si512((const void *)(p + i + 192)));
    }
    a0 = _mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3));
    return (uint64_t)_mm512_reduce_add_epi64(a0);
#elif defined(__AVX2__)
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    uint64_t lanes[4];
    for (i = 0; i < n; i += 128) {
        a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(p + i + 32)));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i *)(p + i + 64)));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i *)(p + i + 96)));
    }
    a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    _mm256_storeu_si256((__m256i *)lanes, a0);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3];
#elif defined(__ARM_NEON)
    uint64x2_t a0 = vdupq_n_u64(0), a1 = a0, a2 = a0, a3 = a0;
    for (i = 0; i < n; i += 64) {
        a0 = vaddq_u64(a0, vld1q_u64((const uint64_t *)(p + i)));
        a1 = vaddq_u64(a1, vld1q_u64((const uint64_t *)(p + i + 16)));
        a2 = vaddq_u64(a2, vld1q_u64((const uint64_t *)(p + i + 32)));
        a3 = vaddq_u64(a3, vld1q_u64((const uint64_t *)(p + i + 48)));
    }
    a0 = vaddq_u64(vaddq_u64(a0, a1), vaddq_u64(a2, a3));
    return vgetq_lane_u64(a0, 0) + vgetq_lane_u64(a0, 1);
#else
    const uint64_t *q = (const uint64_t *)p;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (i = 0; i < n / 8; i += 4) {
        s0 += q[i];
        s1 += q[i + 1];
        s2 += q[i + 2];
        s3 += q[i + 3];
    }
    return s0 + s1 + s2 + s3;
#endif
}

/* Multiply-adds per second of n rounds of eight independent accumulations;
   the asm barrier keeps the compiler from folding rounds together. */
static double int8_rate(int q4, long n) {
    long r;
    int i;
    double t0 = now();
    volatile int sink;
#if defined(__AVX512VNNI__)
    __m512i x = _mm512_set1_epi8(3), w[8], acc[8];
    (void)q4;
    for (i = 0; i < 8; i++) {
        w[i] = _mm512_set1_epi8((char)(i + 1));
        acc[i] = _mm512_setzero_si512();
    }
    for (r = 0; r < n; r++) {
        for (i = 0; i < 8; i++) acc[i] = _mm512_dpbusd_epi32(acc[i], w[i], x);
        __asm__ volatile("" : "+v"(x));
    }
    for (i = 1; i < 8; i++) acc[0] = _mm512_add_epi32(acc[0], acc[i]);
    sink = _mm512_reduce_add_epi32(acc[0]);
    (void)sink;
    return (double)n * 8 * 64 / (now() - t0);
#elif defined(__AVXVNNI__)
    __m256i x = _mm256_set1_epi8(3), w[8], acc[8];
    (void)q4;
    for (i = 0; i < 8; i++) {
        w[i] = _mm256_set1_epi8((char)(i + 1));
        acc[i] = _mm256_setzero_si256();
    }
    for (r = 0; r < n; r++) {
        for (i = 0; i < 8; i++) acc[i] = _mm256_dpbusd_avx_epi32(acc[i], w[i], x);
        __asm__ volatile("" : "+x"(x));
    }
    for (i = 1; i < 8; i++) acc[0] = _mm256_add_epi32(acc[0], acc[i]);
    sink = _mm256_extract_epi32(acc[0], 0);
    (void)sink;
    return (double)n * 8 * 32 / (now() - t0);
#elif defined(__AVX2__)
    __m256i x = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1), w[8], acc[8];
    for (i = 0; i < 8; i++) {
        w[i] = _mm256_set1_epi8((char)(i + 1));
        acc[i] = _mm256_setzero_si256();
    }
    for (r = 0; r < n; r++) {
        if (q4)
            for (i = 0; i < 8; i++) acc[i] = _mm256_add_epi16(acc[i], _mm256_maddubs_epi16(w[i], x));
        else
            for (i = 0; i < 8; i++)
                acc[i] = _mm256_add_epi32(
                    acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(w[i], _mm256_sign_epi8(x, w[i])), ones));
        __asm__ volatile("" : "+x"(x));
    }
    for (i = 1; i < 8; i++) acc[0] = _mm256_add_epi32(acc[0], acc[i]);
    sink = _mm256_extract_epi32(acc[0], 0);
    (void)sink;
    return (double)n * 8 * 32 / (now() - t0);
#elif defined(__ARM_FEATURE_DOTPROD)
    int8x16_t x = vdupq_n_s8(3), w[8];
    int32x4_t acc[8];
    (void)q4;
    for (i = 0; i < 8; i++) {
        w[i] = vdupq_n_s8((int8_t)(i + 1));
        acc[i] = vdupq_n_s32(0);
    }
    for (r = 0; r < n; r++) {
        for (i = 0; i < 8; i++) acc[i] = vdotq_s32(acc[i], w[i], x);
        __asm__ volatile("" : "+w"(x));
    }
    for (i = 1; i < 8; i++) acc[0] = vaddq_s32(acc[0], acc[i]);
    sink = vaddvq_s32(acc[0]);
    (void)sink;
    return (double)n * 8 * 16 / (now() - t0);
#else
    (void)q4;
    (void)n;
    (void)r;
    (void)i;
    (void)t0;
    (void)sink;
    return 0.0;
#endif
}

static int cmp(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

int main(int argc, char **argv) {
    int threads = 1, passes = 9, i, p;
    size_t mib = 1024, bytes, slice;
    uint8_t *buf;
    double gbs[1000];
    volatile uint64_t sink = 0;

    if (argc == 2 && strcmp(argv[1], "--int8") == 0) {
        const char *isa = "none";
        double rate[2][5];
        int k;
#if defined(__AVX512VNNI__)
        isa = "avx512vnni";
#elif defined(__AVXVNNI__)
        isa = "avx-vnni";
#elif defined(__AVX2__)
        isa = "avx2";
#elif defined(__ARM_FEATURE_DOTPROD)
        isa = "neon-dotprod";
#endif
        for (k = 0; k < 2; k++) {
            for (p = 0; p < 5; p++) rate[k][p] = int8_rate(k, 20000000) / 1e9;
            qsort(rate[k], 5, sizeof rate[k][0], cmp);
        }
        printf("{\"isa\": \"%s\", \"q8_0_gmacs\": %.2f, \"q4_0_gmacs\": %.2f}\n", isa, rate[0][2], rate[1][2]);
        return 0;
    }
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-t") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "-s") == 0 && i + 1 < argc)
            mib = (size_t)atol(argv[++i]);
        else if (strcmp(argv[i], "-r") == 0 && i + 1 < argc)
            passes = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: membw [-t THREADS] [-s MIB] [-r PASSES] | membw --int8\n");
            return 1;
        }
    }
    if (threads < 1 || passes < 1 || passes > 1000 || mib < 1) {
        fprintf(stderr, "membw: bad arguments\n");
        return 1;
    }
#ifndef _OPENMP
    if (threads > 1) {
        fprintf(stderr, "membw: built without OpenMP, cannot use %d threads\n", threads);
        return 1;
    }
#endif
    bytes = mib << 20;
    slice = bytes / (size_t)threads / 256 * 256;
    bytes = slice * (size_t)threads;
    buf = (uint8_t *)aligned_alloc(64, bytes);
    if (!buf) {
        fprintf(stderr, "membw: cannot allocate %zu MiB\n", mib);
        return 1;
    }
    /* each thread first touches the slice it will read */
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        memset(buf + (size_t)t * slice, t + 1, slice);
    }

    for (p = -1; p < passes; p++) {
        uint64_t total = 0;
        double t0 = now(), t1;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) reduction(+ : total)
#endif
        {
            int t = 0;
#ifdef _OPENMP
            t = omp_get_thread_num();
#endif
            total += sum_slice(buf + (size_t)t * slice, slice);
        }
        t1 = now();
        sink += total;
        if (p >= 0) gbs[p] = (double)bytes / (t1 - t0) / 1e9;
    }
    qsort(gbs, (size_t)passes, sizeof gbs[0], cmp);
    printf("{\"threads\": %d, \"bytes\": %zu, \"passes\": %d, \"gbs_median\": %.3f, \"gbs_min\": %.3f, \"gbs_max\": "
           "%.3f}\n",
           threads, bytes, passes, passes % 2 ? gbs[passes / 2] : 0.5 * (gbs[passes / 2 - 1] + gbs[passes / 2]), gbs[0],
           gbs[passes - 1]);
    free(buf);
    return sink == 42 ? 2 : 0; /* keeps the sums alive */
}
