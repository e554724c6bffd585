#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "runtime/endpoint.h"

static int parse(const char *text)
{
    struct mcq_endpoint ep;
    return mcq_endpoint_parse(text, &ep);
}

Test(endpoint, tcp_forms)
{
    struct mcq_endpoint ep;
    cr_assert_eq(mcq_endpoint_parse("tcp://127.0.0.1:5555", &ep), 0);
    cr_assert_eq(ep.transport, MCQ_TRANSPORT_TCP);
    cr_assert_str_eq(ep.host, "127.0.0.1");
    cr_assert_eq(ep.port, 5555);
    cr_assert_eq(mcq_endpoint_parse("tcp://*:0", &ep), 0);
    cr_assert_str_eq(ep.host, "*");
    cr_assert_eq(ep.port, 0);
    cr_assert_eq(mcq_endpoint_parse("tcp://[::1]:65535", &ep), 0);
    cr_assert_str_eq(ep.host, "::1");
    cr_assert(ep.host_is_ipv6_literal);
    cr_assert_eq(ep.port, 65535);
    cr_assert_eq(mcq_endpoint_parse("tcp://localhost:*", &ep), 0);
    cr_assert_eq(ep.port, 0);
}

Test(endpoint, bad_text_is_rejected_with_the_right_error)
{
    cr_assert_eq(parse("tcp://"), -EINVAL);
    cr_assert_eq(parse("tcp://host"), -EINVAL);
    cr_assert_eq(parse("tcp://host:"), -EINVAL);
    cr_assert_eq(parse("tcp://:5555"), -EINVAL);
    cr_assert_eq(parse("tcp://1.2.3.4:99999"), -EINVAL);
    cr_assert_eq(parse("tcp://1.2.3.4:65536"), -EINVAL);
    cr_assert_eq(parse("tcp://1.2.3.4:-1"), -EINVAL);
    cr_assert_eq(parse("tcp://1.2.3.4:12a"), -EINVAL);
    cr_assert_eq(parse("tcp://::1:5555"), -EINVAL);
    cr_assert_eq(parse("tcp://[::1:5555"), -EINVAL);
    cr_assert_eq(parse("tcp://[::1]5555"), -EINVAL);
    cr_assert_eq(parse("tcp://[*]:5555"), -EINVAL);
    cr_assert_eq(parse("bogus://x"), -EPROTONOSUPPORT);
    cr_assert_eq(parse("no-transport"), -EINVAL);
    cr_assert_eq(parse(""), -EINVAL);
    cr_assert_eq(parse(NULL), -EINVAL);
    cr_assert_eq(parse("ipc://"), -EINVAL);
    cr_assert_eq(parse("ipc://@"), -EINVAL);
}

Test(endpoint, ipc_path_length_limit)
{
    char text[300] = "ipc://";
    size_t max = MCQ_ENDPOINT_PATH_MAX - 1; /* room for the NUL */
    memset(text + 6, 'a', max);
    text[6 + max] = '\0';
    cr_assert_eq(parse(text), 0);
    text[6 + max] = 'a';
    text[7 + max] = '\0';
    cr_assert_eq(parse(text), -ENAMETOOLONG);
    struct mcq_endpoint ep;
    cr_assert_eq(mcq_endpoint_parse("ipc://@name", &ep), 0);
    cr_assert(ep.abstract);
    cr_assert_str_eq(ep.path, "name");
}

static void roundtrip(const char *text, bool passive, const char *expect)
{
    struct mcq_endpoint ep;
    struct mcq_sockaddr sa;
    char out[MCQ_ENDPOINT_TEXT_MAX];
    cr_assert_eq(mcq_endpoint_parse(text, &ep), 0, "%s", text);
    cr_assert_eq(mcq_endpoint_resolve(&ep, passive, &sa), 0, "%s", text);
    cr_assert_gt(mcq_endpoint_format(&sa, out, sizeof(out)), 0);
    cr_assert_str_eq(out, expect);
}

Test(endpoint, resolve_and_format)
{
    roundtrip("tcp://127.0.0.1:80", false, "tcp://127.0.0.1:80");
    roundtrip("tcp://*:7", true, "tcp://0.0.0.0:7");
    roundtrip("tcp://[::1]:9", false, "tcp://[::1]:9");
    roundtrip("ipc:///tmp/x.sock", true, "ipc:///tmp/x.sock");
    roundtrip("ipc://@abstract", true, "ipc://@abstract");
    struct mcq_endpoint ep;
    struct mcq_sockaddr sa;
    cr_assert_eq(mcq_endpoint_parse("tcp://localhost:1", &ep), 0);
    cr_assert_eq(mcq_endpoint_resolve(&ep, false, &sa), 0);
    cr_assert(sa.sa.sa_family == AF_INET || sa.sa.sa_family == AF_INET6);
    cr_assert_eq(mcq_endpoint_parse("tcp://*:1", &ep), 0);
    cr_assert_eq(mcq_endpoint_resolve(&ep, false, &sa), -EINVAL, "'*' cannot be connected to");
    char small[8];
    cr_assert_eq(mcq_endpoint_parse("tcp://127.0.0.1:80", &ep), 0);
    cr_assert_eq(mcq_endpoint_resolve(&ep, false, &sa), 0);
    cr_assert_eq(mcq_endpoint_format(&sa, small, sizeof(small)), -ENOSPC);
}
