/*
 * Every function of agentwire.h against a real daemon, error paths included.
 * Run by shm/capi/tests/c_api.rs: binding_test SOCKET. Prints "ok NAME" per check and
 * "ALL OK" at the end; exits non-zero at the first failed check.
 */
#define _POSIX_C_SOURCE 200809L
#include <agentwire.h>

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS 10000

static void fail(const char *what, aw_status got, int line) {
    fprintf(stderr, "FAIL line %d: %s: got %s (%s)\n", line, what, aw_status_name((int)got),
            aw_last_error());
    exit(1);
}

/* Expects a status; prints the check's name. */
#define EXPECT(call, want)                                                                  \
    do {                                                                                    \
        aw_status got_ = (call);                                                            \
        if (got_ != (want)) fail(#call, got_, __LINE__);                                    \
        printf("ok %s\n", #call);                                                           \
    } while (0)

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "FAIL line %d: %s (last error: %s)\n", __LINE__, #cond,        \
                    aw_last_error());                                                       \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)

static int payload_is(const aw_message *m, const char *text) {
    size_t len = strlen(text);
    return m->payload_len == len && memcmp(m->payload, text, len) == 0;
}

/* Receives one message within WAIT_MS. */
static aw_message recv_one(aw_agent *agent) {
    aw_message m;
    EXPECT(aw_recv(agent, &m, WAIT_MS), AW_OK);
    return m;
}

/* --- the responder thread: answers "ping" requests with "pong:" + payload ---------- */

struct responder {
    aw_agent *agent;
    int requests_max;
};

static void *respond_loop(void *arg) {
    struct responder *r = arg;
    for (int served = 0; served < r->requests_max;) {
        aw_message m;
        aw_status s = aw_recv(r->agent, &m, WAIT_MS);
        if (s != AW_OK) {
            fprintf(stderr, "responder: %s %s\n", aw_status_name((int)s), aw_last_error());
            exit(1);
        }
        if (m.kind != AW_KIND_REQUEST) continue;
        char reply[64] = "pong:";
        size_t n = m.payload_len < 32 ? m.payload_len : 32;
        memcpy(reply + 5, m.payload, n);
        if (aw_respond(r->agent, &m, reply, 5 + n) != AW_OK) {
            fprintf(stderr, "responder: respond failed: %s\n", aw_last_error());
            exit(1);
        }
        served++;
    }
    return NULL;
}

/* --- recv_batch callback -------------------------------------------------------------- */

struct batch_seen {
    int count;
    int in_order;
};

static void on_message(void *user_data, const aw_message *m) {
    struct batch_seen *seen = user_data;
    char want[16];
    snprintf(want, sizeof want, "batch-%d", seen->count);
    if (!payload_is(m, want)) seen->in_order = 0;
    seen->count++;
}

static aw_agent *connect_agent(const char *socket, const char *name, aw_options **keep) {
    aw_options *o;
    EXPECT(aw_options_new(name, &o), AW_OK);
    EXPECT(aw_options_set_socket(o, socket), AW_OK);
    EXPECT(aw_options_set_idle(o, AW_IDLE_SPIN_THEN_PARK, 1000, 1000), AW_OK);
    aw_agent *a;
    EXPECT(aw_connect(o, &a), AW_OK);
    if (keep) {
        *keep = o;
    } else {
        aw_options_free(o);
    }
    return a;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: binding_test SOCKET\n");
        return 2;
    }
    const char *socket = argv[1];
    setvbuf(stdout, NULL, _IOLBF, 0);

    /* ---- status helpers ---- */
    CHECK(strcmp(aw_status_name(AW_ERR_TIMEOUT), "AW_ERR_TIMEOUT") == 0);
    CHECK(strcmp(aw_status_name(AW_NO_MESSAGE), "AW_NO_MESSAGE") == 0);
    CHECK(strcmp(aw_status_name(999), "AW_UNKNOWN_STATUS") == 0);
    CHECK(aw_last_error() != NULL);
    aw_send_options defaults = aw_send_options_default();
    CHECK(defaults.priority == 2 && defaults.ack == 0 && defaults.correlation_id == 0);

    /* ---- options, with their argument errors ---- */
    aw_options *o;
    EXPECT(aw_options_new(NULL, &o), AW_ERR_INVALID_ARGUMENT);
    CHECK(strstr(aw_last_error(), "name") != NULL);
    EXPECT(aw_options_new("x", NULL), AW_ERR_INVALID_ARGUMENT);
    EXPECT(aw_options_new("\xff\xfe", &o), AW_ERR_INVALID_ARGUMENT);
    CHECK(strstr(aw_last_error(), "UTF-8") != NULL);
    EXPECT(aw_options_new("alice", &o), AW_OK);
    EXPECT(aw_options_set_socket(o, NULL), AW_ERR_INVALID_ARGUMENT);
    EXPECT(aw_options_set_socket(NULL, socket), AW_ERR_INVALID_ARGUMENT);
    EXPECT(aw_options_set_socket(o, socket), AW_OK);
    EXPECT(aw_options_add_capability(o, "echo", "1.2.0"), AW_OK);
    EXPECT(aw_options_add_capability(o, "echo", NULL), AW_ERR_INVALID_ARGUMENT);
    EXPECT(aw_options_add_topic(o, "news"), AW_OK);
    EXPECT(aw_options_add_feature(o, 42), AW_OK);
    EXPECT(aw_options_set_idle(o, 7, 0, 0), AW_ERR_INVALID_ARGUMENT);
    EXPECT(aw_options_set_idle(o, AW_IDLE_PARK, 0, 0), AW_ERR_INVALID_ARGUMENT);
    EXPECT(aw_options_set_idle(o, AW_IDLE_PARK, 0, 500), AW_OK);
    EXPECT(aw_options_set_idle(o, AW_IDLE_SPIN, 0, 0), AW_OK);
    EXPECT(aw_options_set_reconnect(o, 5, 10), AW_OK);
    EXPECT(aw_options_set_send_timeout_ms(o, 2000), AW_OK);
    EXPECT(aw_options_set_ring_capacity(o, 262144), AW_OK);
    EXPECT(aw_options_add_daemon_uid(o, (uint32_t)getuid()), AW_OK);
    aw_options_free(NULL);

    /* ---- connect ---- */
    aw_agent *alice;
    EXPECT(aw_connect(NULL, &alice), AW_ERR_INVALID_ARGUMENT);
    EXPECT(aw_connect(o, NULL), AW_ERR_INVALID_ARGUMENT);
    aw_options *nowhere;
    EXPECT(aw_options_new("lost", &nowhere), AW_OK);
    EXPECT(aw_options_set_socket(nowhere, "/nonexistent/agentwire.sock"), AW_OK);
    EXPECT(aw_connect(nowhere, &alice), AW_ERR_IO);
    CHECK(strlen(aw_last_error()) > 0);
    aw_options_free(nowhere);
    EXPECT(aw_connect(o, &alice), AW_OK);
    aw_options_free(o);

    aw_options *bob_options;
    aw_agent *bob = connect_agent(socket, "bob", &bob_options);
    uint32_t alice_id, bob_id;
    EXPECT(aw_agent_id(alice, &alice_id), AW_OK);
    EXPECT(aw_agent_id(bob, &bob_id), AW_OK);
    EXPECT(aw_agent_id(bob, NULL), AW_ERR_INVALID_ARGUMENT);
    CHECK(alice_id != bob_id && alice_id != 0);

    /* ---- NULL handles everywhere ---- */
    aw_message m;
    EXPECT(aw_send(NULL, 1, "x", 1), AW_ERR_INVALID_ARGUMENT);
    CHECK(strstr(aw_last_error(), "agent") != NULL);
    EXPECT(aw_try_recv(NULL, &m), AW_ERR_INVALID_ARGUMENT);
    EXPECT(aw_try_recv(alice, NULL), AW_ERR_INVALID_ARGUMENT);
    EXPECT(aw_heartbeat(NULL), AW_ERR_INVALID_ARGUMENT);
    EXPECT(aw_send(bob, alice_id, NULL, 3), AW_ERR_INVALID_ARGUMENT);
    aw_close(NULL);

    /* ---- send, receive in place ---- */
    EXPECT(aw_try_recv(alice, &m), AW_NO_MESSAGE);
    EXPECT(aw_recv(alice, &m, 1), AW_NO_MESSAGE);
    EXPECT(aw_send(bob, alice_id, "hello", 5), AW_OK);
    m = recv_one(alice);
    CHECK(payload_is(&m, "hello") && m.source == bob_id && m.kind == AW_KIND_SEND);
    CHECK(m.destination == alice_id && m.priority == 2);
    uintptr_t seg_start;
    size_t seg_len;
    EXPECT(aw_agent_segment_range(alice, &seg_start, &seg_len), AW_OK);
    CHECK((uintptr_t)m.payload >= seg_start && (uintptr_t)m.payload + m.payload_len <= seg_start + seg_len);
    printf("ok received in place: payload %p inside the segment [%p, +%zu)\n", (const void *)m.payload,
           (void *)seg_start, seg_len);
    EXPECT(aw_message_release(alice), AW_OK);
    EXPECT(aw_message_release(alice), AW_OK); /* nothing held: not an error */
    EXPECT(aw_send(bob, alice_id, NULL, 0), AW_OK);
    m = recv_one(alice);
    CHECK(m.payload_len == 0);

    /* ---- send_with: priority, ack, correlation ---- */
    aw_send_options so = aw_send_options_default();
    so.priority = 0;
    so.ack = 1;
    so.correlation_id = 77;
    EXPECT(aw_send_with(bob, 99, alice_id, "x", 1, &so), AW_ERR_INVALID_ARGUMENT);
    EXPECT(aw_send_with(bob, AW_KIND_SEND, alice_id, "urgent", 6, &so), AW_OK);
    m = recv_one(alice);
    CHECK(payload_is(&m, "urgent") && m.priority == 0 && m.correlation_id == 77);
    CHECK((m.flags & AW_FLAG_ACK_REQUESTED) != 0);
    m = recv_one(bob);
    CHECK(m.kind == AW_KIND_ACK && m.correlation_id == 77);
    EXPECT(aw_send_with(bob, AW_KIND_SEND, alice_id, "plain", 5, NULL), AW_OK);
    m = recv_one(alice);
    CHECK(payload_is(&m, "plain") && m.priority == 2);

    /* ---- publish / subscribe / unsubscribe ---- */
    EXPECT(aw_publish(bob, "news", "headline", 8), AW_OK);
    m = recv_one(alice);
    CHECK(payload_is(&m, "headline") && m.kind == AW_KIND_PUBLISH);
    uint32_t weather_id = 0;
    EXPECT(aw_subscribe(bob, "weather", &weather_id), AW_OK);
    CHECK(weather_id != 0);
    EXPECT(aw_subscribe(bob, NULL, NULL), AW_ERR_INVALID_ARGUMENT);
    EXPECT(aw_publish(alice, "weather", "rain", 4), AW_OK);
    m = recv_one(bob);
    CHECK(payload_is(&m, "rain") && m.destination == weather_id);
    EXPECT(aw_unsubscribe(bob, "weather"), AW_OK);

    /* ---- anycast, feature, discover ---- */
    EXPECT(aw_anycast(bob, "echo", "^1", "any", 3), AW_OK);
    m = recv_one(alice);
    CHECK(payload_is(&m, "any") && (m.flags & AW_FLAG_ANYCAST) != 0);
    /* Any node may take it: with no linked node, the local agent does. */
    EXPECT(aw_anycast_any_node(bob, "echo", "^1", "all", 3), AW_OK);
    m = recv_one(alice);
    CHECK(payload_is(&m, "all") && (m.flags & AW_FLAG_ANY_NODE) != 0);
    EXPECT(aw_anycast_any_node(bob, NULL, "^1", "all", 3), AW_ERR_INVALID_ARGUMENT);
    EXPECT(aw_send_feature(bob, 42, "feat", 4, NULL), AW_OK);
    m = recv_one(alice);
    CHECK(payload_is(&m, "feat") && m.feature_id == 42 && (m.flags & AW_FLAG_FEATURE) != 0);
    aw_agent_info infos[4];
    size_t found = 0;
    EXPECT(aw_discover(bob, "echo", "^1", infos, 4, &found), AW_OK);
    CHECK(found == 1 && infos[0].agent_id == alice_id && strcmp(infos[0].name, "alice") == 0);
    CHECK(strcmp(infos[0].version, "1.2.0") == 0 && infos[0].truncated == 0);
    EXPECT(aw_discover(bob, "echo", "^1", NULL, 0, &found), AW_OK);
    CHECK(found == 1);
    EXPECT(aw_discover(bob, "echo", "^2", infos, 4, &found), AW_OK);
    CHECK(found == 0);
    EXPECT(aw_discover(bob, "echo", "^1", NULL, 4, &found), AW_ERR_INVALID_ARGUMENT);

    /* ---- recv_batch with the wakeup descriptor ---- */
    for (int i = 0; i < 3; i++) {
        char text[16];
        int n = snprintf(text, sizeof text, "batch-%d", i);
        EXPECT(aw_send(bob, alice_id, text, (size_t)n), AW_OK);
    }
    int fd = -1;
    EXPECT(aw_wakeup_fd(alice, &fd), AW_OK);
    CHECK(fd >= 0);
    struct batch_seen seen = {0, 1};
    EXPECT(aw_recv_batch(alice, 16, NULL, &seen, NULL), AW_ERR_INVALID_ARGUMENT);
    time_t deadline = time(NULL) + WAIT_MS / 1000;
    while (seen.count < 3) {
        size_t handled = 0;
        EXPECT(aw_recv_batch(alice, 16, on_message, &seen, &handled), AW_OK);
        if (handled > 0) continue;
        int pending = 0;
        EXPECT(aw_arm_wakeup(alice, &pending), AW_OK);
        if (!pending) {
            struct pollfd pfd = {.fd = fd, .events = POLLIN};
            (void)poll(&pfd, 1, 100);
            EXPECT(aw_clear_wakeup(alice), AW_OK);
        }
        CHECK(time(NULL) < deadline);
    }
    CHECK(seen.count == 3 && seen.in_order);

    /* ---- request / respond, nack, timeout ---- */
    aw_agent *server = connect_agent(socket, "server", NULL);
    uint32_t server_id;
    EXPECT(aw_agent_id(server, &server_id), AW_OK);
    struct responder r = {server, 2};
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, respond_loop, &r) == 0);
    aw_message reply;
    /* Sent to bob before its request: kept aside while the request waits, received after. */
    EXPECT(aw_send(alice, bob_id, "early", 5), AW_OK);
    m = recv_one(bob);
    CHECK(payload_is(&m, "early")); /* (received before the request: nothing is stashed) */
    EXPECT(aw_send(alice, bob_id, "meanwhile", 9), AW_OK);
    EXPECT(aw_request(bob, server_id, "ping", 4, WAIT_MS, &reply), AW_OK);
    CHECK(payload_is(&reply, "pong:ping") && reply.kind == AW_KIND_RESPONSE && reply.source == server_id);
    /* A chained request: the payload is the last reply's bytes, still valid during the call. */
    EXPECT(aw_request(bob, server_id, reply.payload, reply.payload_len, WAIT_MS, &reply), AW_OK);
    CHECK(payload_is(&reply, "pong:pong:ping"));
    CHECK(pthread_join(thread, NULL) == 0);
    /* The reply view stays valid until bob's next receive; then the frame sent meanwhile
     * comes out (kept aside by the request, or still in the ring if it came after). */
    CHECK(payload_is(&reply, "pong:pong:ping"));
    m = recv_one(bob);
    CHECK(payload_is(&m, "meanwhile") && m.source == alice_id);
    EXPECT(aw_request(bob, 999999, "who", 3, WAIT_MS, &reply), AW_ERR_NACKED);
    CHECK(aw_last_nack_reason() == AW_NACK_NO_SUCH_AGENT);
    EXPECT(aw_request(bob, alice_id, "silence", 7, 20, &reply), AW_ERR_TIMEOUT);
    CHECK(aw_last_nack_reason() == 0);
    m = recv_one(alice); /* the unanswered request */
    CHECK(m.kind == AW_KIND_REQUEST && payload_is(&m, "silence"));
    EXPECT(aw_request(bob, server_id, "x", 1, WAIT_MS, NULL), AW_ERR_INVALID_ARGUMENT);

    /* ---- zero-copy claim / commit / abort ---- */
    uint8_t *buf = NULL;
    EXPECT(aw_claim(bob, AW_KIND_SEND, alice_id, 8, NULL, &buf), AW_OK);
    CHECK(buf != NULL && ((uintptr_t)buf % 8) == 0);
    EXPECT(aw_send(bob, alice_id, "x", 1), AW_ERR_BUSY);
    EXPECT(aw_claim(bob, AW_KIND_SEND, alice_id, 8, NULL, &buf), AW_ERR_BUSY);
    EXPECT(aw_try_recv(bob, &m), AW_ERR_BUSY);
    EXPECT(aw_message_release(bob), AW_ERR_BUSY);
    EXPECT(aw_agent_id(bob, &bob_id), AW_OK); /* allowed during a claim */
    memcpy(buf, "claimed!", 8);
    EXPECT(aw_commit(bob), AW_OK);
    m = recv_one(alice);
    CHECK(payload_is(&m, "claimed!"));
    EXPECT(aw_commit(bob), AW_ERR_BUSY);
    EXPECT(aw_commit_deferred(bob), AW_ERR_BUSY);
    EXPECT(aw_claim(bob, AW_KIND_SEND, alice_id, 4, NULL, &buf), AW_OK);
    memcpy(buf, "gone", 4);
    EXPECT(aw_abort(bob), AW_OK);
    EXPECT(aw_abort(bob), AW_OK); /* nothing open: not an error */
    EXPECT(aw_claim(bob, AW_KIND_SEND, alice_id, (size_t)1 << 30, NULL, &buf), AW_ERR_TOO_LARGE);
    EXPECT(aw_claim(bob, 0, alice_id, 4, NULL, &buf), AW_ERR_INVALID_ARGUMENT);
    EXPECT(aw_claim(bob, AW_KIND_SEND, alice_id, 4, NULL, NULL), AW_ERR_INVALID_ARGUMENT);
    so = aw_send_options_default();
    so.priority = 1;
    EXPECT(aw_claim(bob, AW_KIND_SEND, alice_id, 8, &so, &buf), AW_OK);
    memcpy(buf, "deferred", 8);
    EXPECT(aw_commit_deferred(bob), AW_OK);
    EXPECT(aw_flush(bob), AW_OK);
    EXPECT(aw_confirm(bob, 1), AW_OK);
    m = recv_one(alice); /* the aborted frame never arrived: this is the deferred one */
    CHECK(payload_is(&m, "deferred") && m.priority == 1);
    EXPECT(aw_try_recv(alice, &m), AW_NO_MESSAGE);

    /* ---- liveness, reconnect ---- */
    EXPECT(aw_heartbeat(alice), AW_OK);
    EXPECT(aw_ensure_connected(alice), AW_OK);
    EXPECT(aw_claim(bob, AW_KIND_SEND, alice_id, 1, NULL, &buf), AW_OK);
    EXPECT(aw_reconnect(bob), AW_ERR_BUSY);
    EXPECT(aw_abort(bob), AW_OK);
    EXPECT(aw_reconnect(bob), AW_OK);
    EXPECT(aw_agent_id(bob, &bob_id), AW_OK);
    EXPECT(aw_send(bob, alice_id, "again", 5), AW_OK);
    m = recv_one(alice);
    CHECK(payload_is(&m, "again") && m.source == bob_id);

    /* ---- a batch to one agent, one publish ---- */
    {
        aw_buffer batch[3] = {{"b1", 2}, {"b2", 2}, {"b3", 2}};
        size_t sent = 0;
        EXPECT(aw_send_batch(bob, alice_id, batch, 3, &sent), AW_OK);
        CHECK(sent == 3);
        for (int i = 0; i < 3; i++) {
            char want[3] = {'b', (char)('1' + i), 0};
            m = recv_one(alice);
            CHECK(payload_is(&m, want) && m.source == bob_id);
        }
        EXPECT(aw_send_batch(bob, alice_id, NULL, 0, &sent), AW_OK);
        CHECK(sent == 0);
        EXPECT(aw_send_batch(bob, alice_id, NULL, 2, &sent), AW_ERR_INVALID_ARGUMENT);
        aw_buffer bad[1] = {{NULL, 4}};
        EXPECT(aw_send_batch(bob, alice_id, bad, 1, NULL), AW_ERR_INVALID_ARGUMENT);
        EXPECT(aw_try_recv(alice, &m), AW_NO_MESSAGE);
    }

    /* ---- the streaming engine (the test's daemon runs it) ---- */
    {
        aw_agent_info engines[2];
        size_t found = 0;
        /* The engine registers just after the socket answers: a watchdog, not a timing. */
        for (int tries = 0; found == 0 && tries < 10000; tries++) {
            EXPECT(aw_discover(alice, "stream-ingest", "^1", engines, 2, &found), AW_OK);
            if (found == 0) {
                struct timespec ms = {0, 1000000};
                nanosleep(&ms, NULL);
            }
        }
        CHECK(found == 1);
        long long t0 = 1700000000000000000LL;
        aw_stream_event events[3] = {
            {.key_name = "disk-1", .event_time_ns = t0, .value = 0.5},
            {.key_name = NULL, .key_id = 7, .event_time_ns = t0 + 1000, .value = 1.5},
            /* a name over the schema's 23 bytes: refused and counted by the engine */
            {.key_name = "a-key-name-far-too-long-for-the-schema", .event_time_ns = t0, .value = 1},
        };
        aw_ingest_ack ack;
        EXPECT(aw_stream_batch_acked(alice, engines[0].agent_id, events, 3, WAIT_MS, &ack), AW_OK);
        CHECK(ack.accepted == 2 && ack.malformed == 1 && strlen(ack.first_problem) > 0);
        EXPECT(aw_stream_batch_acked(alice, engines[0].agent_id, events, 2, WAIT_MS, NULL),
               AW_ERR_INVALID_ARGUMENT);
        EXPECT(aw_stream_batch_acked(alice, engines[0].agent_id, NULL, 2, WAIT_MS, &ack),
               AW_ERR_INVALID_ARGUMENT);
        EXPECT(aw_stream_batch(alice, AW_STREAM_FEATURE_ID, events, 2), AW_OK);
        EXPECT(aw_stream_batch(alice, AW_STREAM_FEATURE_ID, events, AW_STREAM_EVENTS_MAX + 1),
               AW_ERR_INVALID_ARGUMENT);
        /* The fire-and-forget batch is counted before an acked one sent after it. */
        EXPECT(aw_stream_batch_acked(alice, engines[0].agent_id, NULL, 0, WAIT_MS, &ack), AW_OK);
        CHECK(ack.accepted == 0 && ack.malformed == 0 && ack.first_problem[0] == 0);
        printf("ok streamed\n");
    }

    /* ---- close: an open claim is aborted, views die with the agent ---- */
    EXPECT(aw_claim(bob, AW_KIND_SEND, alice_id, 1, NULL, &buf), AW_OK);
    aw_close(bob);
    aw_close(server);
    aw_close(alice);
    aw_options_free(bob_options);
    printf("ALL OK\n");
    return 0;
}
