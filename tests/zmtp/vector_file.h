/* Loader for the libzmq captures in tests/zmtp/vectors/ (format in the README there).
 * Header-only so any test can include it without touching the test glob. */
#ifndef MCQ_TESTS_ZMTP_VECTOR_FILE_H
#define MCQ_TESTS_ZMTP_VECTOR_FILE_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VEC_MAX_ITEMS 64
#define VEC_MAX_META 8
#define VEC_WORD_LEN 32

struct vec_item {
    char dir[VEC_WORD_LEN];   /* "zmq" (libzmq sent it) or "raw" (the capture script sent it) */
    char label[VEC_WORD_LEN]; /* "greeting", "ready", "msg", "msg-more", "error-5e", ... */
    uint8_t *bytes;
    size_t len;
};

struct vec_file {
    char name[64];
    char meta_key[VEC_MAX_META][VEC_WORD_LEN];
    char meta_val[VEC_MAX_META][VEC_WORD_LEN];
    size_t n_meta;
    struct vec_item items[VEC_MAX_ITEMS];
    size_t n_items;
};

static int vec_hex_nibble(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int vec_parse_item(struct vec_file *vf, const char *dir, const char *label, const char *hex)
{
    size_t digits = strlen(hex);
    if (vf->n_items == VEC_MAX_ITEMS || digits % 2 != 0)
        return -EINVAL;
    struct vec_item *it = &vf->items[vf->n_items];
    it->len = digits / 2;
    it->bytes = malloc(it->len ? it->len : 1);
    if (!it->bytes)
        return -ENOMEM;
    for (size_t i = 0; i < it->len; i++) {
        int hi = vec_hex_nibble(hex[2 * i]), lo = vec_hex_nibble(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            free(it->bytes);
            return -EINVAL;
        }
        it->bytes[i] = (uint8_t)(hi << 4 | lo);
    }
    snprintf(it->dir, sizeof(it->dir), "%s", dir);
    snprintf(it->label, sizeof(it->label), "%s", label);
    vf->n_items++;
    return 0;
}

/* Loads tests/zmtp/vectors/<name>.hex. 0 or a negative errno; free with vec_free. */
static int vec_load(const char *name, struct vec_file *vf)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/zmtp/vectors/%s.hex", MCQ_TESTS_DIR, name);
    memset(vf, 0, sizeof(*vf));
    snprintf(vf->name, sizeof(vf->name), "%s", name);
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while (rc == 0 && (n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] == '\n')
            line[n - 1] = '\0';
        if (line[0] == '#' || line[0] == '\0')
            continue;
        char *save = NULL;
        char *w0 = strtok_r(line, " ", &save);
        char *w1 = strtok_r(NULL, " ", &save);
        char *w2 = strtok_r(NULL, " ", &save);
        if (!w0 || !w1 || !w2) {
            rc = -EINVAL;
        } else if (strcmp(w0, "meta") == 0) {
            if (vf->n_meta == VEC_MAX_META) {
                rc = -EINVAL;
                break;
            }
            snprintf(vf->meta_key[vf->n_meta], VEC_WORD_LEN, "%s", w1);
            snprintf(vf->meta_val[vf->n_meta], VEC_WORD_LEN, "%s", w2);
            vf->n_meta++;
        } else {
            rc = vec_parse_item(vf, w0, w1, w2);
        }
    }
    free(line);
    fclose(f);
    return rc;
}

static void vec_free(struct vec_file *vf)
{
    for (size_t i = 0; i < vf->n_items; i++)
        free(vf->items[i].bytes);
    vf->n_items = 0;
}

/* The value of a meta key, or NULL. */
static const char *vec_meta(const struct vec_file *vf, const char *key)
{
    for (size_t i = 0; i < vf->n_meta; i++)
        if (strcmp(vf->meta_key[i], key) == 0)
            return vf->meta_val[i];
    return NULL;
}

/* The nth (0-based) item sent by `dir` with `label`, or NULL. */
static const struct vec_item *vec_find(const struct vec_file *vf, const char *dir,
                                       const char *label, int nth)
{
    for (size_t i = 0; i < vf->n_items; i++) {
        const struct vec_item *it = &vf->items[i];
        if (strcmp(it->dir, dir) == 0 && strcmp(it->label, label) == 0 && nth-- == 0)
            return it;
    }
    return NULL;
}

/* Everything `dir` sent, concatenated, in a new malloc'd buffer (caller frees). */
static uint8_t *vec_stream(const struct vec_file *vf, const char *dir, size_t *len)
{
    size_t total = 0;
    for (size_t i = 0; i < vf->n_items; i++)
        if (strcmp(vf->items[i].dir, dir) == 0)
            total += vf->items[i].len;
    uint8_t *out = malloc(total ? total : 1);
    if (!out)
        return NULL;
    size_t off = 0;
    for (size_t i = 0; i < vf->n_items; i++) {
        if (strcmp(vf->items[i].dir, dir) == 0) {
            memcpy(out + off, vf->items[i].bytes, vf->items[i].len);
            off += vf->items[i].len;
        }
    }
    *len = total;
    return out;
}

#endif
