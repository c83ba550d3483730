/* checkpoint/checkpoint_crc.c — block checksums of checkpoint datasets.
 *
 * A dataset of n fp32 elements is cut into blocks of B elements (the last
 * may be shorter); attribute crc32c holds the CRC32C of each block's
 * little-endian bytes, crc32c_block_elements holds B. Loading at another
 * layout reads sub-ranges, so a read covers the whole blocks it touches:
 * the blocks lying wholly inside the requested range are read straight into
 * the caller's buffer and checked there (no copy), and the at most two
 * partly covered edge blocks are read whole into a scratch buffer, checked,
 * and their requested part copied out. No element leaves this file
 * unverified when the dataset carries checksums. */
#include "checkpoint/checkpoint_internal.h"

#include <stdlib.h>
#include <string.h>

#include "core/crc32c.h"

int64_t ckpt_crc_block_elements(int64_t n) {
    int64_t block = CKPT_CRC_MIN_BLOCK;
    while ((n + block - 1) / block > CKPT_CRC_MAX_BLOCKS) block *= 2;
    return block;
}

typedef struct {
    int64_t block, count; /* block == 0: the dataset carries no checksums */
    uint32_t *crc;        /* owned, count entries */
} StoredCrc;

static bool malformed(CkptCrcResult *res, const char *why) {
    res->status = CKPT_CRC_MALFORMED;
    snprintf(res->detail, sizeof res->detail, "%s", why);
    return false;
}

static bool io_failed(CkptCrcResult *res) {
    res->status = CKPT_CRC_IO;
    ckpt_hdf5_detail(res->detail, sizeof res->detail);
    return false;
}

/* An integer attribute of exactly `want` elements, converted to mem_type. */
static bool read_int_array(hid_t loc, const char *name, hid_t mem_type, hssize_t want,
                           void *out) {
    hid_t attr = H5Aopen(loc, name, H5P_DEFAULT);
    if (attr < 0) return false;
    hid_t type = H5Aget_type(attr), space = H5Aget_space(attr);
    bool ok = type >= 0 && H5Tget_class(type) == H5T_INTEGER && space >= 0 &&
              H5Sget_simple_extent_npoints(space) == want && H5Aread(attr, mem_type, out) >= 0;
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    H5Aclose(attr);
    return ok;
}

static bool load_stored(hid_t dset, int64_t n, bool required, StoredCrc *s,
                        CkptCrcResult *res) {
    s->block = 0;
    s->crc = NULL;
    htri_t has_crc = H5Aexists(dset, CKPT_ATTR_CRC);
    htri_t has_block = has_crc < 0 ? -1 : H5Aexists(dset, CKPT_ATTR_CRC_BLOCK);
    if (has_crc < 0 || has_block < 0) return io_failed(res);
    if (!has_crc && !has_block && !required) return true;
    if (!has_crc || !has_block)
        return malformed(res, "has no " CKPT_ATTR_CRC " and " CKPT_ATTR_CRC_BLOCK
                              " attributes, which every dataset of its format version carries");
    int64_t block = 0;
    if (!read_int_array(dset, CKPT_ATTR_CRC_BLOCK, H5T_NATIVE_INT64, 1, &block) || block < 1 ||
        block > n + CKPT_CRC_MIN_BLOCK)
        return malformed(res, "has a malformed " CKPT_ATTR_CRC_BLOCK " attribute");
    s->count = (n + block - 1) / block;
    s->crc = xmalloc((size_t)s->count * sizeof *s->crc + 1);
    if (!read_int_array(dset, CKPT_ATTR_CRC, H5T_NATIVE_UINT32, (hssize_t)s->count, s->crc)) {
        free(s->crc);
        s->crc = NULL;
        return malformed(res, "has a malformed " CKPT_ATTR_CRC
                              " attribute (not one uint32 per block)");
    }
    s->block = block;
    return true;
}

/* Where a dataset's elements come from: HDF5, or its raw bytes at offset. */
typedef struct {
    hid_t dset, fspace;
    const CkptRawSource *raw;
    int64_t offset; /* -1: through HDF5 */
} Source;

static bool read_slab(const Source *src, int64_t start, int64_t count, float *out,
                      CkptCrcResult *res) {
    if (src->offset >= 0) {
        bool ok = ckpt_raw_read(src->raw->file, src->raw->bounce,
                                src->offset + start * (int64_t)sizeof(float),
                                (size_t)count * sizeof(float), out, res->detail,
                                sizeof res->detail);
        if (!ok) res->status = CKPT_CRC_IO;
        return ok;
    }
    hid_t dset = src->dset, fspace = src->fspace;
    hsize_t off = (hsize_t)start, len = (hsize_t)count;
    hid_t mspace = H5Screate_simple(1, &len, NULL);
    bool ok = mspace >= 0 &&
              H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &off, NULL, &len, NULL) >= 0 &&
              H5Dread(dset, H5T_NATIVE_FLOAT, mspace, fspace, H5P_DEFAULT, out) >= 0;
    if (!ok) io_failed(res); /* before H5Sclose, which clears HDF5's error stack */
    if (mspace >= 0) H5Sclose(mspace);
    return ok;
}

/* data holds blocks [b0, b1) of the dataset, the last one possibly short. */
static bool check_blocks(const StoredCrc *s, int64_t n, int64_t b0, int64_t b1,
                         const float *data, int64_t *blocks, CkptCrcResult *res) {
    int64_t first = b0 * s->block, last = b1 * s->block < n ? b1 * s->block : n;
    uint32_t *computed = xmalloc((size_t)(b1 - b0) * sizeof *computed);
    crc32c_blocks(data, (size_t)(last - first) * sizeof(float), (size_t)s->block * sizeof(float),
                  computed);
    bool ok = true;
    for (int64_t b = b0; ok && b < b1; b++) {
        if (computed[b - b0] == s->crc[b]) continue;
        res->status = CKPT_CRC_MISMATCH;
        res->block = b;
        res->block_begin = b * s->block;
        res->block_end = res->block_begin + s->block < n ? res->block_begin + s->block : n;
        res->stored = s->crc[b];
        res->computed = computed[b - b0];
        ok = false;
    }
    free(computed);
    if (ok && blocks) *blocks += b1 - b0;
    return ok;
}

/* Reads one edge block whole, checks it, copies its part of [lo, hi). */
static bool read_edge_block(const Source *src, const StoredCrc *s, int64_t n, int64_t b,
                            int64_t lo, int64_t hi, float *out, float *scratch, int64_t *blocks,
                            CkptCrcResult *res) {
    int64_t start = b * s->block, end = start + s->block < n ? start + s->block : n;
    if (!read_slab(src, start, end - start, scratch, res) ||
        !check_blocks(s, n, b, b + 1, scratch, blocks, res))
        return false;
    int64_t from = lo > start ? lo : start, to = hi < end ? hi : end;
    memcpy(out + (from - lo), scratch + (from - start), (size_t)(to - from) * sizeof *out);
    return true;
}

static bool read_checked(const Source *src, const StoredCrc *s, int64_t n, int64_t lo,
                         int64_t hi, float *out, int64_t *blocks, CkptCrcResult *res) {
    const int64_t B = s->block;
    const int64_t b0 = lo / B, b1 = (hi - 1) / B + 1;
    /* Blocks wholly inside [lo, hi); the last block ends at n, not at a multiple of B. */
    int64_t in0 = (lo + B - 1) / B, in1 = hi == n ? s->count : hi / B;
    if (in1 < in0) in1 = in0;
    if (in0 < in1) {
        int64_t start = in0 * B, end = in1 * B < n ? in1 * B : n;
        if (!read_slab(src, start, end - start, out + (start - lo), res) ||
            !check_blocks(s, n, in0, in1, out + (start - lo), blocks, res))
            return false;
    }
    /* The touched blocks not wholly inside: at most the first and the last. */
    int64_t edges[2], num_edges = 0;
    if (b0 < in0 || b0 >= in1) edges[num_edges++] = b0;
    if (b1 - 1 != b0 && (b1 - 1 < in0 || b1 - 1 >= in1)) edges[num_edges++] = b1 - 1;
    if (num_edges == 0) return true;
    float *scratch = xmalloc((size_t)B * sizeof *scratch);
    bool ok = true;
    for (int64_t i = 0; ok && i < num_edges; i++)
        ok = read_edge_block(src, s, n, edges[i], lo, hi, out, scratch, blocks, res);
    free(scratch);
    return ok;
}

bool ckpt_crc_read(hid_t dset, hid_t fspace, int64_t n, int64_t lo, int64_t hi, float *out,
                   bool required, const CkptRawSource *raw, int64_t *blocks,
                   CkptCrcResult *res) {
    memset(res, 0, sizeof *res);
    if (lo >= hi) return true;
    StoredCrc s;
    if (!load_stored(dset, n, required, &s, res)) return false;
    Source src = {dset, fspace, raw, -1};
    if (raw && raw->file->fd >= 0) src.offset = ckpt_raw_offset(dset, n);
    bool ok = s.block == 0 ? read_slab(&src, lo, hi - lo, out, res)
                           : read_checked(&src, &s, n, lo, hi, out, blocks, res);
    free(s.crc);
    return ok;
}
