/* tests/test_document_masks.c — data.h's document masks (--eod-mask-loss,
 * --reset-position-ids, --reset-attention-mask) against Megatron's own
 * algorithm for them, written out here as its GPTDataset states it: a full
 * T x T lower-triangular attention mask from which, for every EOD index i
 * in order, the block [i+1:, :i+1] is cleared; position ids from which
 * (i + 1 - previous boundary) is subtracted after every EOD; a loss mask
 * that is zero where the input token is EOD. Every flag combination, on
 * random samples dense with EODs and on the edges (EOD first, last,
 * repeated, absent). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/errors.h"
#include "data/data.h"
#include "test_backend_util.h" /* CHECK */


enum { EOD = 7, MAX_T = 80 };

typedef struct {
    unsigned char attention[MAX_T][MAX_T]; /* 1: query i may attend to key j */
    int position_ids[MAX_T];
    unsigned char loss_mask[MAX_T];
} MegatronMasks;

static void megatron_masks(const int32_t *tokens, int T, const DocumentMasking *dm,
                           MegatronMasks *m) {
    for (int i = 0; i < T; i++)
        for (int j = 0; j < T; j++) m->attention[i][j] = j <= i;
    for (int t = 0; t < T; t++) {
        m->loss_mask[t] = !(dm->eod_mask_loss && tokens[t] == dm->eod_token);
        m->position_ids[t] = t;
    }
    int prev = 0;
    for (int i = 0; i < T; i++) {
        if (tokens[i] != dm->eod_token) continue;
        if (dm->reset_attention_mask)
            for (int r = i + 1; r < T; r++)
                for (int c = 0; c <= i; c++) m->attention[r][c] = 0;
        if (dm->reset_position_ids) {
            for (int r = i + 1; r < T; r++) m->position_ids[r] -= i + 1 - prev;
            prev = i + 1;
        }
    }
}

static int check_sample(const int32_t *tokens, int T, const DocumentMasking *dm) {
    static MegatronMasks want;
    megatron_masks(tokens, T, dm, &want);
    int32_t targets[MAX_T], position_ids[MAX_T], key_start[MAX_T];
    for (int t = 0; t < T; t++) targets[t] = 1000 + t; /* any ids >= 0 */
    const int kept = document_masks_apply(dm, tokens, targets, T, position_ids, key_start);
    int want_kept = 0;
    for (int t = 0; t < T; t++) {
        want_kept += want.loss_mask[t];
        CHECK(targets[t] == (want.loss_mask[t] ? 1000 + t : LOSS_IGNORED_TARGET));
        CHECK(position_ids[t] == want.position_ids[t]);
        for (int j = 0; j < T; j++)
            CHECK(want.attention[t][j] == (j <= t && j >= key_start[t]));
    }
    CHECK(kept == want_kept);
    return 0;
}

int main(void) {
    int failures = 0, samples = 0;
    uint64_t state = 20261203;
    for (int flags = 0; flags < 8; flags++) {
        const DocumentMasking dm = {.eod_mask_loss = flags & 1,
                                    .reset_position_ids = flags & 2,
                                    .reset_attention_mask = flags & 4,
                                    .eod_token = EOD};
        CHECK(document_masking_on(&dm) == (flags != 0));
        static const int lengths[] = {1, 2, 5, 17, 64, MAX_T};
        for (size_t l = 0; l < sizeof lengths / sizeof *lengths; l++) {
            const int T = lengths[l];
            int32_t tokens[MAX_T];
            for (int trial = 0; trial < 40; trial++) {
                for (int t = 0; t < T; t++) {
                    state = state * 6364136223846793005ull + 1442695040888963407ull;
                    const unsigned r = (unsigned)(state >> 33);
                    tokens[t] = r % 5 == 0 ? EOD : (int32_t)(r % 50) + 8; /* 20% EOD */
                }
                if (trial == 0) tokens[0] = EOD;                   /* a one-token first document */
                if (trial == 1) tokens[T - 1] = EOD;               /* a sample ending on EOD */
                if (trial == 2) for (int t = 0; t < T; t++) tokens[t] = EOD; /* all EOD */
                if (trial == 3) for (int t = 0; t < T; t++) tokens[t] = 9;   /* no EOD */
                failures += check_sample(tokens, T, &dm);
                samples++;
            }
        }
    }
    fprintf(stderr, "%d samples: %s\n", samples, failures ? "FAILED" : "all equal to Megatron's masks");
    return failures ? 1 : 0;
}
