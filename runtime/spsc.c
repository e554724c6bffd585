#include "runtime/spsc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int mcq_spsc_create(unsigned capacity, struct mcq_spsc **out)
{
    if (!out || capacity == 0 || capacity > MCQ_SPSC_MAX_CAPACITY ||
        (capacity & (capacity - 1)) != 0)
        return -EINVAL;
    /* Slots follow the header in the same block; the header is a multiple of the alignment,
     * so the first slot starts on a fresh line pair. */
    size_t bytes = sizeof(struct mcq_spsc) + (size_t)capacity * sizeof(struct mcq_spsc_entry);
    bytes = (bytes + MCQ_SPSC_ALIGN - 1) & ~(size_t)(MCQ_SPSC_ALIGN - 1);
    struct mcq_spsc *r = aligned_alloc(MCQ_SPSC_ALIGN, bytes);
    if (!r)
        return -ENOMEM;
    /* Touch every page here, on the creating (consumer's) thread, for NUMA first-touch. */
    memset(r, 0, bytes);
    struct mcq_spsc_entry *slots = (struct mcq_spsc_entry *)(r + 1);
    r->_p_mask = r->_c_mask = capacity - 1;
    r->_p_slots = r->_c_slots = slots;
    atomic_init(&r->_tail, 0);
    atomic_init(&r->_head, 0);
    *out = r;
    return 0;
}

void mcq_spsc_destroy(struct mcq_spsc *r)
{
    free(r);
}
