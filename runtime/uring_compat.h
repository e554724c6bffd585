/* What liburing 2.3 (Debian 12) lacks and we use, under our own prefix so a newer liburing
 * never collides. Values from the kernel UAPI; availability is checked at run time (probe,
 * feature bits, -EINVAL from setup), never assumed from these headers. */
#ifndef MCQ_RUNTIME_URING_COMPAT_H
#define MCQ_RUNTIME_URING_COMPAT_H

#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <sys/mman.h>

#ifndef IORING_FEAT_RECVSEND_BUNDLE
#define IORING_FEAT_RECVSEND_BUNDLE (1U << 14)
#endif
#ifndef IORING_FEAT_MIN_TIMEOUT
#define IORING_FEAT_MIN_TIMEOUT (1U << 15)
#endif

/* io_uring_setup_buf_ring() arrived in liburing 2.4: map, init and register a provided
 * buffer ring of `entries` (power of two) for group `bgid`. Returns the ring or NULL with
 * *err set to -errno. Free with mcq_uring_free_buf_ring(). */
static inline struct io_uring_buf_ring *
mcq_uring_setup_buf_ring(struct io_uring *ring, unsigned entries, int bgid, int *err)
{
    size_t len = (size_t)entries * sizeof(struct io_uring_buf);
    void *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        *err = -errno;
        return NULL;
    }
    struct io_uring_buf_ring *br = mem;
    io_uring_buf_ring_init(br);
    struct io_uring_buf_reg reg = {
        .ring_addr = (unsigned long)br,
        .ring_entries = entries,
        .bgid = (unsigned short)bgid,
    };
    int rc = io_uring_register_buf_ring(ring, &reg, 0);
    if (rc < 0) {
        munmap(mem, len);
        *err = rc;
        return NULL;
    }
    *err = 0;
    return br;
}

static inline void mcq_uring_free_buf_ring(struct io_uring *ring, struct io_uring_buf_ring *br,
                                           unsigned entries, int bgid)
{
    io_uring_unregister_buf_ring(ring, bgid);
    munmap(br, (size_t)entries * sizeof(struct io_uring_buf));
}

#endif
