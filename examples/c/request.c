/*
 * request: finds an agent offering "echo" ^1 and sends it COUNT requests, printing each
 * reply.
 *
 *   cc -Wall -Wextra -std=c11 request.c $(pkg-config --cflags --libs agentwire) -o request
 *   ./request /run/agentwire/agentwire.sock 10
 */
#include <agentwire.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: request SOCKET COUNT\n");
        return 2;
    }
    int count = atoi(argv[2]);

    aw_options *options;
    aw_agent *agent;
    if (aw_options_new("requester", &options) != AW_OK ||
        aw_options_set_socket(options, argv[1]) != AW_OK ||
        aw_connect(options, &agent) != AW_OK) {
        fprintf(stderr, "connect: %s\n", aw_last_error());
        return 1;
    }
    aw_options_free(options);

    /* Discovery fills a caller-owned array and says how many it found. */
    aw_agent_info found[4];
    size_t found_count = 0;
    if (aw_discover(agent, "echo", "^1", found, 4, &found_count) != AW_OK || found_count == 0) {
        fprintf(stderr, "no echo agent: %s\n", aw_last_error());
        return 1;
    }

    for (int i = 0; i < count; i++) {
        char text[32];
        int len = snprintf(text, sizeof text, "hello %d", i);
        aw_message reply;
        /* The reply is a view owned by the agent, valid until its next receive. */
        aw_status status = aw_request(agent, found[0].agent_id, text, (size_t)len, 5000, &reply);
        if (status != AW_OK) {
            fprintf(stderr, "request: %s: %s (nack reason %u)\n", aw_status_name(status),
                    aw_last_error(), aw_last_nack_reason());
            return 1;
        }
        printf("reply %.*s\n", (int)reply.payload_len, (const char *)reply.payload);
    }
    aw_close(agent);
    return 0;
}
