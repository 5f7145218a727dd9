/* dnsvr.export._hamming: the fused region-Chamfer Hamming kernel of S^f_B codes, AVX-512 VPOPCNTDQ.
 *
 * Built by the package install (pyproject.toml, ext-modules, optional: without a C compiler the install goes
 * on).  dnsvr.export.hamming uses it where the CPU has AVX-512 VPOPCNTDQ (`available()`) and faiss elsewhere:
 * a scalar-popcount build of this loop was slower than faiss.  Python prepares the layouts and owns every
 * rule; this file only computes, for every query frame i and candidate frame j,
 *
 *     H[i, j] = sum over query regions r of min over candidate regions s of popcount(q[i, r] ^ c[j, s])
 *
 * in one pass over the packed 64-bit words, 8 candidate frames per vector (no distance matrix is written).  For
 * 512-bit codes (8 words) each candidate region's words are loaded once per query frame and compared with every
 * query region (`frame_8_words`: 1.9x the word loop on one thread, benchmarks/hamming_kernel_bench.py).
 *
 * region_chamfer(query, lanes, out, frames, regions, words, blocks)
 *     query  uint64 [frames, regions, words]            (C-contiguous)
 *     lanes  uint64 [blocks, regions, words, 8]          candidate frames in blocks of 8, word-interleaved:
 *                                                        lanes[b, s, w, l] = word w of region s of frame 8b + l
 *     out    int32  [blocks, frames, 8]                  H of query frame i and candidate frame 8b + l
 * The GIL is released while it runs, so Python threads can split the blocks.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define LANES 8
#define MAX_FAST_REGIONS 32 /* query regions whose running minima the 8-word loop keeps */

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_AVX512_KERNEL 1
#include <immintrin.h>

/* One vector holds a word of 8 candidate frames: XOR with the broadcast query word, VPOPCNTQ, add. */
__attribute__((target("avx512f,avx512vpopcntdq"))) static inline __m512i distance_avx512(const uint64_t *q,
                                                                                       const uint64_t *c,
                                                                                       Py_ssize_t words) {
    __m512i distance = _mm512_setzero_si512();
    for (Py_ssize_t w = 0; w < words; w++)
        distance = _mm512_add_epi64(distance, _mm512_popcnt_epi64(_mm512_xor_si512(
                                                  _mm512_set1_epi64((long long)q[w]), _mm512_loadu_si512(c + w * LANES))));
    return distance;
}

/* 512-bit codes (8 words, the served S^f_B's): a candidate region's 8 vectors are loaded once and compared with
 * every query region (the query words are broadcast from memory), the running minima kept per query region. */
__attribute__((target("avx512f,avx512vpopcntdq"))) static void frame_8_words(const uint64_t *q,
                                                                            const uint64_t *block,
                                                                            Py_ssize_t regions, __m512i *best) {
    for (Py_ssize_t r = 0; r < regions; r++) best[r] = _mm512_set1_epi64(INT64_MAX);
    for (Py_ssize_t s = 0; s < regions; s++) {
        const uint64_t *c = block + s * 8 * LANES;
        const __m512i c0 = _mm512_loadu_si512(c), c1 = _mm512_loadu_si512(c + LANES),
                      c2 = _mm512_loadu_si512(c + 2 * LANES), c3 = _mm512_loadu_si512(c + 3 * LANES),
                      c4 = _mm512_loadu_si512(c + 4 * LANES), c5 = _mm512_loadu_si512(c + 5 * LANES),
                      c6 = _mm512_loadu_si512(c + 6 * LANES), c7 = _mm512_loadu_si512(c + 7 * LANES);
        for (Py_ssize_t r = 0; r < regions; r++) {
            const uint64_t *w = q + r * 8;
#define WORD(k, ck) _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_set1_epi64((long long)w[k]), ck))
            const __m512i low = _mm512_add_epi64(_mm512_add_epi64(WORD(0, c0), WORD(1, c1)),
                                                 _mm512_add_epi64(WORD(2, c2), WORD(3, c3)));
            const __m512i high = _mm512_add_epi64(_mm512_add_epi64(WORD(4, c4), WORD(5, c5)),
                                                  _mm512_add_epi64(WORD(6, c6), WORD(7, c7)));
#undef WORD
            best[r] = _mm512_min_epi64(best[r], _mm512_add_epi64(low, high));
        }
    }
}

__attribute__((target("avx512f,avx512vpopcntdq"))) static void blocks_avx512(const uint64_t *query,
                                                                             const uint64_t *lanes,
                                                                             int32_t *out, Py_ssize_t frames,
                                                                             Py_ssize_t regions,
                                                                             Py_ssize_t words,
                                                                             Py_ssize_t blocks) {
    __m512i best[MAX_FAST_REGIONS];
    const int fast = words == 8 && regions <= MAX_FAST_REGIONS;
    for (Py_ssize_t b = 0; b < blocks; b++) {
        const uint64_t *block = lanes + b * regions * words * LANES;
        for (Py_ssize_t i = 0; i < frames; i++) {
            const uint64_t *q = query + i * regions * words;
            __m512i total = _mm512_setzero_si512();
            if (fast) {
                frame_8_words(q, block, regions, best);
                for (Py_ssize_t r = 0; r < regions; r++) total = _mm512_add_epi64(total, best[r]);
            } else {
                for (Py_ssize_t r = 0; r < regions; r++) {
                    __m512i nearest = _mm512_set1_epi64(INT64_MAX);
                    for (Py_ssize_t s = 0; s < regions; s++)
                        nearest = _mm512_min_epi64(nearest, distance_avx512(q + r * words, block + s * words * LANES,
                                                                            words));
                    total = _mm512_add_epi64(total, nearest);
                }
            }
            _mm256_storeu_si256((__m256i *)(out + (b * frames + i) * LANES), _mm512_cvtepi64_epi32(total));
        }
    }
}
#endif

static int cpu_has_kernel(void) {
#ifdef HAVE_AVX512_KERNEL
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq");
#else
    return 0;
#endif
}

static PyObject *available(PyObject *self, PyObject *unused) {
    return PyBool_FromLong(cpu_has_kernel());
}

static PyObject *region_chamfer(PyObject *self, PyObject *args) {
    Py_buffer query, lanes, out;
    Py_ssize_t frames, regions, words, blocks;
    if (!PyArg_ParseTuple(args, "y*y*w*nnnn", &query, &lanes, &out, &frames, &regions, &words, &blocks))
        return NULL;
    PyObject *result = NULL;
    const Py_ssize_t word = (Py_ssize_t)sizeof(uint64_t);
    if (!cpu_has_kernel()) {
        PyErr_SetString(PyExc_RuntimeError, "region_chamfer: this CPU has no AVX-512 VPOPCNTDQ (see available())");
    } else if (frames < 0 || regions < 1 || words < 1 || blocks < 0 ||
               query.len != frames * regions * words * word ||
               lanes.len != blocks * regions * words * LANES * word ||
               out.len != blocks * frames * LANES * (Py_ssize_t)sizeof(int32_t)) {
        PyErr_SetString(PyExc_ValueError, "region_chamfer: buffer sizes do not match the shapes given");
    } else {
#ifdef HAVE_AVX512_KERNEL
        Py_BEGIN_ALLOW_THREADS
        blocks_avx512(query.buf, lanes.buf, out.buf, frames, regions, words, blocks);
        Py_END_ALLOW_THREADS
#endif
        result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&query);
    PyBuffer_Release(&lanes);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"region_chamfer", region_chamfer, METH_VARARGS, "Region-Chamfer Hamming sums (see the module source)."},
    {"available", available, METH_NOARGS, "Whether this CPU runs region_chamfer (AVX-512 VPOPCNTDQ)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_hamming",
                                    "Fused region-Chamfer Hamming kernel of S^f_B codes (dnsvr.export.hamming).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__hamming(void) { return PyModule_Create(&module); }
