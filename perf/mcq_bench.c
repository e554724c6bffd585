#include "bench.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REC_TEXT_MAX 1024   /* one JSON record, bytes */
#define SPIN_US_MAX 1000000 /* longest busy-poll accepted, us */

struct bench_rec {
    char json[REC_TEXT_MAX];
    size_t json_len;
    char row[REC_TEXT_MAX];
    size_t row_len;
    struct bench_rec *next;
};

static struct bench_def *benches;
static struct bench_rec *records_head, **records_tail = &records_head;

void bench_register(struct bench_def *def)
{
    struct bench_def **p = &benches;
    while (*p)
        p = &(*p)->next;
    *p = def;
}

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void rec_append(char *buf, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void rec_append(char *buf, size_t *len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *len, REC_TEXT_MAX - *len, fmt, ap);
    va_end(ap);
    if (n > 0)
        *len += (size_t)n < REC_TEXT_MAX - *len ? (size_t)n : REC_TEXT_MAX - *len - 1;
}

struct bench_rec *bench_rec_begin(const char *bench, const char *impl)
{
    struct bench_rec *r = calloc(1, sizeof(*r));
    if (!r) {
        fprintf(stderr, "mcq-bench: out of memory\n");
        exit(1);
    }
    rec_append(r->json, &r->json_len, "{\"bench\":\"%s\",\"impl\":\"%s\"", bench, impl);
    rec_append(r->row, &r->row_len, "%-8s %-8s", bench, impl);
    return r;
}

void bench_rec_num(struct bench_rec *r, const char *key, double value)
{
    if (!isfinite(value)) { /* not measured: JSON has no NaN */
        rec_append(r->json, &r->json_len, ",\"%s\":null", key);
        rec_append(r->row, &r->row_len, "  %s=-", key);
        return;
    }
    rec_append(r->json, &r->json_len, ",\"%s\":%.6g", key, value);
    rec_append(r->row, &r->row_len, "  %s=%.4g", key, value);
}

void bench_rec_int(struct bench_rec *r, const char *key, int64_t value)
{
    rec_append(r->json, &r->json_len, ",\"%s\":%lld", key, (long long)value);
    rec_append(r->row, &r->row_len, "  %s=%lld", key, (long long)value);
}

void bench_rec_str(struct bench_rec *r, const char *key, const char *value)
{
    rec_append(r->json, &r->json_len, ",\"%s\":\"%s\"", key, value);
    rec_append(r->row, &r->row_len, "  %s=%s", key, value);
}

void bench_rec_end(struct bench_rec *r)
{
    rec_append(r->json, &r->json_len, "}");
    printf("%s\n", r->row);
    fflush(stdout);
    *records_tail = r;
    records_tail = &r->next;
}

static int write_json(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -errno;
    fputs("[\n", f);
    for (struct bench_rec *r = records_head; r; r = r->next)
        fprintf(f, "  %s%s\n", r->json, r->next ? "," : "");
    fputs("]\n", f);
    return fclose(f) ? -errno : 0;
}

/* A spin time in microseconds: decimal digits only, at most SPIN_US_MAX. */
static bool parse_spin(const char *s, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (*s < '0' || *s > '9' || *end || errno || v > SPIN_US_MAX)
        return false;
    *out = (unsigned)v;
    return true;
}

static bool group_exists(const char *group)
{
    for (struct bench_def *b = benches; b; b = b->next)
        if (strcmp(b->group, group) == 0)
            return true;
    return false;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: mcq-bench GROUP... [--quick] [--json FILE] [--spin-us US]\ngroups:");
    const char *last = NULL;
    for (struct bench_def *b = benches; b; b = b->next) {
        if (!last || strcmp(last, b->group))
            fprintf(out, " %s", b->group);
        last = b->group;
    }
    fprintf(out, "\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"quick", no_argument, NULL, 'q'},
        {"json", required_argument, NULL, 'j'},
        {"spin-us", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    struct bench_ctx ctx = {.argv0 = argv[0], .spin_us = BENCH_SPIN_US_DEFAULT};
    const char *json = NULL;
    const char *spin = getenv("MCQ_SPIN_US");
    int c;
    while ((c = getopt_long(argc, argv, "qj:s:h", opts, NULL)) != -1) {
        switch (c) {
        case 'q':
            ctx.quick = true;
            break;
        case 'j':
            json = optarg;
            break;
        case 's':
            spin = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind == argc || (spin && !parse_spin(spin, &ctx.spin_us))) {
        usage(stderr);
        return 2;
    }
    for (int g = optind; g < argc; g++) {
        if (!group_exists(argv[g])) {
            fprintf(stderr, "mcq-bench: unknown group '%s'\n", argv[g]);
            usage(stderr);
            return 2;
        }
    }
    int failed = 0;
    for (int g = optind; g < argc; g++) {
        for (struct bench_def *b = benches; b; b = b->next) {
            if (strcmp(b->group, argv[g]))
                continue;
            int rc = b->run(&ctx);
            if (rc < 0) {
                fprintf(stderr, "mcq-bench: %s/%s FAILED: %s\n", b->group, b->name, strerror(-rc));
                failed++;
            }
        }
    }
    if (json) {
        int rc = write_json(json);
        if (rc < 0) {
            fprintf(stderr, "mcq-bench: cannot write %s: %s\n", json, strerror(-rc));
            return 1;
        }
    }
    return failed ? 1 : 0;
}
